"""Paper reproductions run from the command line (``lastlayer reproduce NAME``). Each
writes results.h5, report.md and PNG figures to its output folder."""

from . import fixed_classifier, layca, post_training

EXPERIMENTS = {
    "post-training": post_training.run,
    "fixed-classifier": fixed_classifier.run,
    "layca": layca.run,
}
