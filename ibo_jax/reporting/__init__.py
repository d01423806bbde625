"""Report renderers: text and tables from what the stages computed (no statistics here).

`markdown` holds the one markdown helper (numbers, intervals, tables); the renderer modules
(`evaluation.report`, `evaluation.report_meta`, `evaluation.figures`) will move here later.
"""
