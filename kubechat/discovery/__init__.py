"""Finding live workers: lease records, lease stores (local files, Kubernetes), live view.

``records``: ``WorkerRecord`` and the ``LeaseWriter`` / ``WorkerSource`` protocols;
``local_store``: records as files in a state folder; ``heartbeat``: a worker's renewal task;
``live``: which workers may receive traffic now.
"""
