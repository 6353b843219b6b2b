"""The dashboard: server-rendered pages for admins, served by the same process at ``/``.

``app`` builds the Starlette app; ``web`` holds what every page uses (sign-in
checks, rendering, CSRF, the admin-action log, operations); each module of
``pages`` is one page, found by itself. docs/dashboard.md says how to add one.
"""
