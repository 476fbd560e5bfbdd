"""Errors that the Node wrapper (src/cli/export.ts) turns into a MindeyeError.

An ExportError is printed on stderr as one line, `MINDEYE_EXPORT_ERROR <json>`, with the fields
code, summary, file, field, value, expected and fix, and the process exits with status 3.
"""
import json
import sys

EXIT_EXPORT_ERROR = 3


class ExportError(Exception):
    def __init__(self, code, summary, file=None, field=None, value=None, expected=None, fix=None):
        super().__init__(summary)
        self.payload = {
            'code': code, 'summary': summary, 'file': file, 'field': field,
            'value': value, 'expected': expected, 'fix': fix,
        }

    def report(self):
        payload = {k: v for k, v in self.payload.items() if v is not None}
        sys.stderr.write('MINDEYE_EXPORT_ERROR ' + json.dumps(payload) + '\n')
        sys.stderr.flush()
