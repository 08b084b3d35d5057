"""Pure functions from result folders to tables and figures: no network, no root, no model.

- ``load``: result folders -> tidy data frames (frames, steps, runs), with clear errors;
- ``stats``: the delay statistics (n, mean, std, p50/p90/p99, min, max), computed once;
- ``summary``: plain-text summary of frame records (used by ``testbed run`` and ``demo``);
- ``tables``: Table 5-style statistics with validity flags; CSV, Markdown, LaTeX;
- ``figures``: delay components, mean/std, percentiles, time series, CDFs, processing;
- ``paper``: Tables 1, 4 and 5 of the paper, with their source;
- ``profiles``: device profiles (Table 1, ``testbed profile`` files), split shares, payloads;
- ``analytic``: T = head + payload*8/r + tail; gains and closed-form crossing points;
- ``analytic_figures``: the paper's Figures 2 and 11-13 from the analytic model;
- ``conditions``: what a run's manifest says about how it ran;
- ``report``: one self-contained HTML report of one or more runs (``testbed report``).
"""
