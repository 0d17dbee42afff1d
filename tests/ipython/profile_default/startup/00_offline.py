# Loaded by notebook kernels during `make test` (IPYTHONDIR=tests/ipython): a notebook
# that tries to reach the network fails, as unit tests do (pytest-socket's guard).
import pytest_socket

pytest_socket.socket_allow_hosts(["127.0.0.1", "::1"], allow_unix_socket=True)
del pytest_socket
