"""Paper reproductions run from the command line (``lastlayer reproduce NAME``). Each
writes results.h5, report.md and PNG figures to its output folder."""

from . import post_training

EXPERIMENTS = {
    "post-training": post_training.run,
}
