"""Where events live: one ``Engine`` interface, one implementation per engine."""
