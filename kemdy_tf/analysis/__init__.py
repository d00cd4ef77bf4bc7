"""Dataset statistics and the E4 bio-signal study, written as a markdown report.

    python -m kemdy_tf.analysis --data DIR [--out reports/analysis] [--speaker ID] [--max-k N]

Modules: `dataset_stats` (the numbers), `bio_study` (DTW clustering against emotion),
`plots` (the figures), `report` (`analyse`: report.md + stats.json), `progress`.
See docs/analysis.md.
"""
