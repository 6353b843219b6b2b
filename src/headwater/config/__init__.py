"""The project: ``headwater.toml``, its folder and its data folder."""

from headwater.config.project import Project, load_project

__all__ = ["Project", "load_project"]
