"""The running process: composes the stages into one server, or runs them apart."""
