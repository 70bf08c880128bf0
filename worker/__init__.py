"""Celery GPU workers: load a model once per process and run HSA jobs.

The task and job pipeline arrive with the serving issue.
"""
