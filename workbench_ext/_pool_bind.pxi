# Included by every kernel module: its parallel loops run on the one shared pool (wb_pool.h).
cdef extern from "wb_pool.h":
    int wb_pool_bind(object capsule) except -1
from workbench_ext.pool import _run as _pool_run
wb_pool_bind(_pool_run)
