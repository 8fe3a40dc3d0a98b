"""Where a streaming solver's data comes from and where its chunk sums run: ``sources``
reads row ranges of an array in memory or in a .npy / .npz / .h5 / .zarr file (picklable,
so Dask workers open the file themselves), ``runners`` evaluates a sum over row chunks in
this process or on a Dask cluster. The estimators and the neural-collapse metrics share it.
"""

from .runners import DaskRunner, LocalRunner, SchedulerError, check_scheduler, make_runner
from .sources import ArraySource, default_chunk_rows, fold_edges, open_source, row_chunks

__all__ = ["ArraySource", "open_source", "row_chunks", "default_chunk_rows", "fold_edges",
           "LocalRunner", "DaskRunner", "make_runner", "check_scheduler", "SchedulerError"]
