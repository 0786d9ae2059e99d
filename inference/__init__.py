"""Serving: the model loader, the request codecs and the HTTP server."""
