"""``lastlayer compare``: every last-layer strategy side by side on the same tasks,
networks, budgets and seeds, each also with temperature scaling and with the last-layer
Laplace predictive; one table (test error, NLL, ECE, Brier, lambda_max of the head's
Hessian, NC1) with 95 % intervals and Holm-corrected paired tests against the baseline, one
figure, results.h5 and report.md.

* ``strategies``: the training runs (learned, post-trained SGD / exact, fixed Hadamard,
  fixed simplex ETF, Layca, PoF after SAM; transfer: fine-tuning, ENTAME, LP-FT);
* ``evaluate``: what is measured of one trained network;
* ``report``: the tables, the paired tests, results.h5's tree and the figure;
* ``study``: settings (full and --quick), the loop over tasks and seeds, ``run``.

The strategies call the papers' own procedures (``lastlayer.models.papers.*.method``): the study is
not a paper, so it may use all five.
"""
