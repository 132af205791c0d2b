"""`uffdtrace top`: a live view of UFFDIO_MOVE activity.

    sources.py  live / demo / replay sources, all producing trace records
    model.py    pure-Python aggregation of those records into snapshots
    stats.py    rate meters and latency histograms the model is built from
    view.py     filtering and sorting of snapshot rows (no Textual)
    detail.py   the full diagnosis of one failure, as labelled lines
    app.py      the Textual application; widgets.py its widgets
"""
