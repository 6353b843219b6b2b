"""The dashboard's pages, one module each.

A module here gives ``routes`` (Starlette routes, their handlers wrapped in
``web.page``, ``web.data`` or ``web.action``) and, to be in the navigation,
``NAV`` (a :class:`~headwater.dashboard.web.Nav`). It is found by itself.
"""
