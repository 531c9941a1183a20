"""What clients share, measured: differential-privacy accounting, memorisation of shared synthetic
data, membership inference, gradient inversion, and the audit that runs them on trained runs."""
