"""Finding live workers: lease records, lease stores (local files, Kubernetes), live view."""
