# _kernel exports no Python names: its nogil samplers (residual_sample,
# cumulative_sample) are cimported by _core through _kernel.pxd.
