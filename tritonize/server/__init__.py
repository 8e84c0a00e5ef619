"""Starting and supervising the real `tritonserver` process."""

from tritonize.server.launcher import ModelLoadError, ServerConfig, ServerStartError, TritonServer

__all__ = ["ModelLoadError", "ServerConfig", "ServerStartError", "TritonServer"]
