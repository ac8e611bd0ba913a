"""How the hot ops run: attention and the linear recurrence, each with a plain-JAX reference.

Imports nothing from the rest of the repository.
"""

from kernels.attention import attention, attention_reference
from kernels.masks import bidirectional_radius, visible
from kernels.scan import linear_scan, linear_scan_assoc, linear_scan_reference

__all__ = [
    "attention",
    "attention_reference",
    "bidirectional_radius",
    "linear_scan",
    "linear_scan_assoc",
    "linear_scan_reference",
    "visible",
]
