"""Tools over a finished build: `verify`, `view` (read rows back), `inspect_text` and
`inspect_html` (show tokens and masks), `stats`, `diff`."""
