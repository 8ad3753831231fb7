"""Mixed precision lives in :mod:`fcis.runtime.amp` (shared by training and inference); this
name stays for existing imports."""

from fcis.runtime.amp import AMP_DTYPES, amp_dtype, autocast, check_amp, make_grad_scaler

__all__ = ["AMP_DTYPES", "amp_dtype", "check_amp", "autocast", "make_grad_scaler"]
