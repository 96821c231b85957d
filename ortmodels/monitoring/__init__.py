"""Performance figures of loaded models: the stats registry, Prometheus exposition, LangChain callbacks."""
