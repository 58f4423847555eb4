"""Foundation: the one owner of box formats (``boxes``), atomic writes and output checks (``io``), one-line user errors (``errors``), the numeric domains of every command-line option and one-line parse errors (``options``), method names (``names``), lazy package exports.

May import: the standard library, NumPy and torch only, never another cream_pl package.
"""
