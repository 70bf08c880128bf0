"""The HTTP gateway (FastAPI, OpenAI Videos API). It never imports torch or hsa_core.

Routes, settings and the job store arrive with the serving issue.
"""
