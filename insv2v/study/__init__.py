"""Blind pairwise user studies of video-editing methods: build one from method outputs (build.py), keep its
participants' plans and ratings in SQLite (store.py, the only module that touches the database), and report the
ratings with honest statistics (stats.py, report.py). `insv2v study build|report` is the command (cli.py)."""
