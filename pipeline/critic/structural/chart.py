"""Structural diff of two matplotlib programs: structure, data, text and style discrepancies.

The candidate is untrusted code, so it is never executed: both programs are parsed (Python AST) and walked
by a small abstract interpreter that knows literals, module-level variables, loops over known sequences,
a few builtins and numpy constructors, and records every plotting call with its resolved arguments (a bar
call inside `for name, vals in data.items()` is recorded once per series, with that series' values). Work is
bounded (steps, loop lengths, sizes); whatever it cannot know becomes UNKNOWN and is not compared.

The recorded calls become a figure model (style, subplot layout, panels with series, titles, axis labels,
category labels, legend, grid, annotations), and two models are diffed part by part: series are paired per
panel by kind, label and data (a missing series or data point is one error), then values, labels, colours
and keywords are compared. Locations and descriptions follow the edit engine (`edits/chart.py`): "title of
the first subplot", "data point 3 of 'values'", "legend entry 'Costs'", "blue elements"; so do severities.
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.critic.structural.base import (
    CandidateUnparseable,
    Findings,
    StructuralDiffError,
    align,
    dice,
    is_typo,
    unparseable_candidate,
)
from pipeline.data.edits.base import scale_severity
from pipeline.data.vocab import COLOR_NAME

TASK = "chart"

# ------------------------------------------------------------------------------------- the interpreter
MAX_STEPS = 20000  # statements, loop iterations and comprehension items together
MAX_LOOP = 500  # iterations of one loop
MAX_LEN = 10000  # elements of a list, characters of a string
MAX_CALLS = 3000  # recorded plotting calls


class _Unknown:
    """A value the interpreter cannot know; every operation on it is unknown too."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class NpArray(list):
    """A numpy array as a list: arithmetic is element-wise."""


@dataclass(eq=False)
class ModRef:
    name: str  # 'plt', 'np', 'plt.style', ...


@dataclass(eq=False)
class FigRef:
    pass


@dataclass(eq=False)
class AxesRef:
    panel: int


@dataclass(eq=False)
class ArtistRef:
    panel: int


@dataclass(eq=False)
class Bound:
    target: Any
    name: str


@dataclass
class Call:
    panel: int  # -1: the figure
    method: str  # axes method name ('set_title' also for plt.title); 'artist.<name>' for artist methods
    args: list
    kwargs: dict
    receiver: str  # the receiver's source text ('ax1', 'plt', 'fig')
    in_loop: bool


class _Budget(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_MODULES = {"matplotlib.pyplot": "plt", "pylab": "plt", "numpy": "np", "matplotlib": "matplotlib"}
_PLT_TO_AXES = {"title": "set_title", "xlabel": "set_xlabel", "ylabel": "set_ylabel", "xlim": "set_xlim",
                "ylim": "set_ylim", "xscale": "set_xscale", "yscale": "set_yscale"}
_FIGURE_METHODS = {"suptitle", "colorbar", "text", "legend", "set_facecolor", "supxlabel", "supylabel"}
_IGNORED_PLT = {"show", "savefig", "close", "tight_layout", "subplots_adjust", "figure_size", "draw", "pause",
                "ion", "ioff", "clf", "cla", "rc", "rcdefaults", "margins"}
_SAFE_BUILTINS = {"len", "range", "zip", "enumerate", "list", "tuple", "dict", "sorted", "reversed", "sum", "min",
                  "max", "abs", "round", "int", "float", "str", "bool", "set"}


_COMPARISONS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
                ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
                ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def _plain(v) -> bool:
    """A value built only of primitives and containers (safe to hand to a builtin)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return not (isinstance(v, int) and abs(v) > 10 ** 18) and not (isinstance(v, str) and len(v) > MAX_LEN)
    if isinstance(v, (list, tuple, set)):
        return len(v) <= MAX_LEN and all(_plain(x) for x in v)
    if isinstance(v, dict):
        return len(v) <= MAX_LEN and all(_plain(k) and _plain(x) for k, x in v.items())
    return False


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Interpreter:
    """Walks a module's statements recording plotting calls; never executes the program."""

    def __init__(self, tree: ast.Module):
        self.env: dict[str, Any] = {}
        self.calls: list[Call] = []
        self.origins: dict[int, tuple[str, str]] = {}  # id(list) → (variable, series or 'row k')
        self._alive: list = []  # keeps the objects of `origins` alive, so ids stay unique
        self.steps = 0
        self.loop_depth = 0
        self.panels: list[AxesRef] = []
        self.current: AxesRef | None = None
        self.layout: tuple[int, int] | None = None
        self.style = "default"
        self.tree = tree

    def run(self) -> Interpreter:
        try:
            self._block(self.tree.body, top=True)
        except (_Budget, _Break, _Continue, RecursionError):
            pass
        return self

    # ------------------------------------------------------------------------------- statements
    def _tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS or len(self.calls) > MAX_CALLS:
            raise _Budget()

    def _block(self, body: list[ast.stmt], top: bool = False) -> None:
        for stmt in body:
            self._tick()
            try:
                self._stmt(stmt, top)
            except (_Budget, _Break, _Continue):
                raise
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001, S112 - anything unforeseen: this statement is unknown
                continue

    def _stmt(self, s: ast.stmt, top: bool) -> None:
        if isinstance(s, ast.Import):
            for a in s.names:
                name = _MODULES.get(a.name, a.name)
                if a.asname:
                    self.env[a.asname] = ModRef(name)
                else:
                    root = a.name.split(".")[0]
                    self.env[root] = ModRef(_MODULES.get(root, root))
        elif isinstance(s, ast.ImportFrom):
            mod = _MODULES.get(s.module or "", s.module or "")
            for a in s.names:
                full = f"{mod}.{a.name}"
                self.env[a.asname or a.name] = ModRef(_MODULES.get(full, full))
        elif isinstance(s, ast.Assign):
            value = self._expr(s.value)
            for target in s.targets:
                self._assign(target, value)
            if top and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
                self._register(s.targets[0].id, s.value, value)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self._assign(s.target, self._expr(s.value))
        elif isinstance(s, ast.AugAssign):
            current = self._expr(s.target) if isinstance(s.target, (ast.Name, ast.Subscript)) else UNKNOWN
            self._assign(s.target, self._binop(s.op, current, self._expr(s.value)))
        elif isinstance(s, ast.Expr):
            self._expr(s.value)
        elif isinstance(s, ast.For):
            self._for(s)
        elif isinstance(s, ast.While):
            test = self._expr(s.test)
            if test is UNKNOWN or (_plain(test) and test):
                self.loop_depth += 1
                try:
                    self._block(s.body)
                except (_Break, _Continue):
                    pass
                finally:
                    self.loop_depth -= 1
        elif isinstance(s, ast.If):
            test = self._expr(s.test)
            known = test is not UNKNOWN and _plain(test)
            self._block(s.orelse if known and not test else s.body)  # unknown: the body, as the likelier
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            self._block(s.body)
        elif isinstance(s, ast.Try):
            self._block(s.body)
            self._block(s.finalbody)
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.env[s.name] = UNKNOWN
        elif isinstance(s, ast.Break):
            raise _Break()
        elif isinstance(s, ast.Continue):
            raise _Continue()
        elif isinstance(s, ast.Return):
            raise _Budget()  # a module-level return ends the program

    def _register(self, var: str, node: ast.expr, value) -> None:
        """Provenance of module-level data lists, named as the edit engine names them."""
        def keep(obj, series: str) -> None:
            self.origins[id(obj)] = (var, series)
            self._alive.append(obj)

        if isinstance(node, ast.List) and isinstance(value, list):
            keep(value, "")
            if value and all(isinstance(r, list) for r in value):
                for r, row in enumerate(value):
                    keep(row, f"row {r + 1}")
        elif isinstance(node, ast.Dict) and isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and isinstance(v, list):
                    keep(v, k)

    def _assign(self, target: ast.expr, value) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            names = target.elts
            if isinstance(value, ArtistRef):
                items = [value] * len(names)
            elif isinstance(value, (list, tuple)) and len(value) == len(names) and not any(
                    isinstance(n, ast.Starred) for n in names):
                items = list(value)
            else:
                items = [UNKNOWN] * len(names)
            for n, v in zip(names, items):
                self._assign(n.value if isinstance(n, ast.Starred) else n, v)
        elif isinstance(target, ast.Subscript):
            obj, key = self._expr(target.value), self._expr(target.slice)
            if isinstance(obj, dict) and _plain(key) and not isinstance(key, (list, dict, set)) or isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
                obj[key] = value

    def _iterate(self, value) -> list:
        if isinstance(value, dict):
            return list(value.keys())[:MAX_LOOP]
        if isinstance(value, (list, tuple, str)):
            return list(value)[:MAX_LOOP]
        if isinstance(value, ArtistRef):
            return [value]
        return [UNKNOWN]

    def _for(self, s: ast.For) -> None:
        items = self._iterate(self._expr(s.iter))
        self.loop_depth += 1
        try:
            for item in items:
                self._tick()
                self._assign(s.target, item)
                try:
                    self._block(s.body)
                except _Continue:
                    continue
            self._block(s.orelse)  # a break raised _Break past this
        except _Break:
            pass
        finally:
            self.loop_depth -= 1

    # ------------------------------------------------------------------------------- expressions
    def _expr(self, e: ast.expr):
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.Name):
            if e.id in self.env:
                return self.env[e.id]
            if e.id in _SAFE_BUILTINS:
                return ModRef(f"builtins.{e.id}")
            return {"True": True, "False": False, "None": None}.get(e.id, UNKNOWN)
        if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
            items = []
            for x in e.elts:
                if isinstance(x, ast.Starred):
                    v = self._expr(x.value)
                    items.extend(v if isinstance(v, (list, tuple)) else [UNKNOWN])
                else:
                    items.append(self._expr(x))
                if len(items) > MAX_LEN:
                    return UNKNOWN
            return items if isinstance(e, ast.List) else tuple(items) if isinstance(e, ast.Tuple) else UNKNOWN
        if isinstance(e, ast.Dict):
            out = {}
            for k, v in zip(e.keys, e.values):
                if k is None:
                    inner = self._expr(v)
                    if isinstance(inner, dict):
                        out.update(inner)
                    continue
                key = self._expr(k)
                if isinstance(key, (str, int, float, bool, tuple)) and _plain(key):
                    out[key] = self._expr(v)
            return out
        if isinstance(e, ast.UnaryOp):
            v = self._expr(e.operand)
            if isinstance(e.op, ast.USub):
                return -v if _num(v) else NpArray(-x if _num(x) else UNKNOWN for x in v) \
                    if isinstance(v, NpArray) else UNKNOWN
            if isinstance(e.op, ast.UAdd):
                return v if _num(v) else UNKNOWN
            if isinstance(e.op, ast.Not):
                return (not v) if _plain(v) else UNKNOWN
            return UNKNOWN
        if isinstance(e, ast.BinOp):
            return self._binop(e.op, self._expr(e.left), self._expr(e.right))
        if isinstance(e, ast.BoolOp):
            values = [self._expr(v) for v in e.values]
            if not all(_plain(v) for v in values):
                return UNKNOWN
            if isinstance(e.op, ast.And):
                return all(values) and values[-1]
            return next((v for v in values if v), values[-1])
        if isinstance(e, ast.Compare):
            return self._compare(e)
        if isinstance(e, ast.IfExp):
            test = self._expr(e.test)
            if not _plain(test):
                return UNKNOWN
            return self._expr(e.body if test else e.orelse)
        if isinstance(e, ast.Subscript):
            return self._subscript(self._expr(e.value), e.slice)
        if isinstance(e, ast.Attribute):
            return self._attribute(self._expr(e.value), e.attr)
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.JoinedStr):
            return self._fstring(e)
        if isinstance(e, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            return self._comprehension(e)
        if isinstance(e, ast.NamedExpr):
            v = self._expr(e.value)
            self._assign(e.target, v)
            return v
        return UNKNOWN

    def _binop(self, op: ast.operator, a, b):
        if isinstance(a, NpArray) or isinstance(b, NpArray):
            self._tick(max(len(a) if isinstance(a, list) else 0, len(b) if isinstance(b, list) else 0) // 20)
            if isinstance(a, list) and isinstance(b, list):
                if len(a) != len(b):
                    return UNKNOWN
                return NpArray(self._binop(op, x, y) for x, y in zip(a, b))
            if isinstance(a, list) and _num(b):
                return NpArray(self._binop(op, x, b) for x in a)
            if _num(a) and isinstance(b, list):
                return NpArray(self._binop(op, a, y) for y in b)
            return UNKNOWN
        if _num(a) and _num(b):
            try:
                if isinstance(op, ast.Pow) and (abs(b) > 64 or abs(a) > 10 ** 6):
                    return UNKNOWN
                fn = _ARITHMETIC.get(type(op))
                if fn is None:
                    return UNKNOWN
                v = fn(a, b)
                return v if _num(v) and not (isinstance(v, int) and abs(v) > 10 ** 18) else UNKNOWN
            except (ArithmeticError, ValueError, TypeError):
                return UNKNOWN
        if isinstance(op, ast.Add) and type(a) is type(b) and isinstance(a, (str, list, tuple)):
            return a + b if len(a) + len(b) <= MAX_LEN else UNKNOWN
        if isinstance(op, ast.Mult) and isinstance(a, (str, list, tuple)) and isinstance(b, int) \
                and not isinstance(b, bool):
            return a * b if len(a) * max(b, 0) <= MAX_LEN else UNKNOWN
        return UNKNOWN

    def _compare(self, e: ast.Compare):
        left = self._expr(e.left)
        for op, right_node in zip(e.ops, e.comparators):
            right = self._expr(right_node)
            if not (_plain(left) and _plain(right)):
                return UNKNOWN
            try:
                ok = _COMPARISONS[type(op)](left, right)
            except (TypeError, KeyError):
                return UNKNOWN
            if not ok:
                return False
            left = right
        return True

    def _subscript(self, obj, node: ast.expr):
        if isinstance(obj, ArtistRef):
            return obj
        if isinstance(node, ast.Slice):
            parts = [self._expr(p) if p is not None else None for p in (node.lower, node.upper, node.step)]
            if isinstance(obj, (list, tuple, str)) and all(p is None or isinstance(p, int) for p in parts) \
                    and parts[2] != 0:
                out = obj[slice(*parts)]
                return NpArray(out) if isinstance(obj, NpArray) else out
            return UNKNOWN
        key = self._expr(node)
        if isinstance(key, tuple) and isinstance(obj, list):  # axes[0, 1] on a grid of axes
            for k in key:
                obj = self._subscript_value(obj, k)
            return obj
        return self._subscript_value(obj, key)

    @staticmethod
    def _subscript_value(obj, key):
        if isinstance(obj, (list, tuple, str)) and isinstance(key, int) and not isinstance(key, bool):
            return obj[key] if -len(obj) <= key < len(obj) else UNKNOWN
        if isinstance(obj, dict) and isinstance(key, (str, int, float, tuple)) and _plain(key):
            return obj.get(key, UNKNOWN)
        return UNKNOWN

    def _attribute(self, obj, attr: str):
        if isinstance(obj, ModRef):
            full = f"{obj.name}.{attr}"
            return ModRef(_MODULES.get(full, full))
        if isinstance(obj, (AxesRef, FigRef, ArtistRef, dict, str, list)):
            if isinstance(obj, list) and attr == "flat":
                return self._flatten(obj)
            if isinstance(obj, list) and attr == "T":
                return UNKNOWN
            return Bound(obj, attr)
        return UNKNOWN

    @staticmethod
    def _flatten(obj: list) -> list:
        out = []
        for x in obj:
            out.extend(Interpreter._flatten(x) if isinstance(x, list) else [x])
        return out

    def _fstring(self, e: ast.JoinedStr):
        parts = []
        for v in e.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
                continue
            value = self._expr(v.value)
            spec = self._fstring(v.format_spec) if v.format_spec is not None else ""
            if not _plain(value) or not isinstance(spec, str) or any(
                    int(n) > 100 for n in re.findall(r"\d+", spec)):
                return UNKNOWN
            try:
                if v.conversion == ord("r"):
                    value = repr(value)
                elif v.conversion in (ord("s"), ord("a")):
                    value = str(value)
                parts.append(format(value, spec))
            except (ValueError, TypeError):
                return UNKNOWN
        s = "".join(parts)
        return s if len(s) <= MAX_LEN else UNKNOWN

    def _comprehension(self, e):
        out: list = []

        def gen(k: int) -> None:
            if k == len(e.generators):
                self._tick()
                out.append(self._expr(e.elt))
                return
            g = e.generators[k]
            for item in self._iterate(self._expr(g.iter)):
                self._assign(g.target, item)
                conds = [self._expr(c) for c in g.ifs]
                if all(c is UNKNOWN or (_plain(c) and c) for c in conds):
                    gen(k + 1)

        saved = dict(self.env)
        try:
            gen(0)
        finally:
            self.env = saved  # comprehension variables do not leak
        return out if isinstance(e, (ast.ListComp, ast.GeneratorExp)) else UNKNOWN

    # ------------------------------------------------------------------------------------- calls
    def _call(self, e: ast.Call):
        func = self._expr(e.func)
        args: list = []
        for a in e.args:
            if isinstance(a, ast.Starred):
                v = self._expr(a.value)
                args.extend(v if isinstance(v, (list, tuple)) else [UNKNOWN])
            else:
                args.append(self._expr(a))
        kwargs: dict = {}
        for k in e.keywords:
            v = self._expr(k.value)
            if k.arg is None:
                if isinstance(v, dict):
                    kwargs.update({str(x): y for x, y in v.items()})
            else:
                kwargs[k.arg] = v
        receiver = ast.unparse(e.func.value) if isinstance(e.func, ast.Attribute) else ""
        if isinstance(func, Bound):
            return self._method(func, args, kwargs, receiver)
        if isinstance(func, ModRef):
            return self._module_call(func.name, args, kwargs, receiver)
        return UNKNOWN

    def _record(self, panel: int, method: str, args, kwargs, receiver: str) -> None:
        self.calls.append(Call(panel, method, list(args), dict(kwargs), receiver, self.loop_depth > 0))
        self._tick()

    def _new_axes(self) -> AxesRef:
        ax = AxesRef(len(self.panels))
        self.panels.append(ax)
        self.current = ax
        return ax

    def _axes(self) -> AxesRef:
        return self.current if self.current is not None else self._new_axes()

    def _subplots(self, args, kwargs):
        rows = args[0] if len(args) > 0 else kwargs.get("nrows", 1)
        cols = args[1] if len(args) > 1 else kwargs.get("ncols", 1)
        if not (isinstance(rows, int) and isinstance(cols, int)) or not (1 <= rows * cols <= 64):
            return FigRef(), UNKNOWN
        self.layout = (rows, cols)
        grid = [[self._new_axes() for _ in range(cols)] for _ in range(rows)]
        self.current = grid[0][0]
        if rows == 1 and cols == 1:
            return FigRef(), grid[0][0]
        if rows == 1 or cols == 1:
            return FigRef(), [ax for row in grid for ax in row]
        return FigRef(), grid

    def _subplot(self, args):
        if len(args) == 1 and isinstance(args[0], int) and 111 <= args[0] <= 999:
            args = [args[0] // 100, args[0] // 10 % 10, args[0] % 10]
        if len(args) >= 3 and all(isinstance(a, int) for a in args[:3]) and 1 <= args[0] * args[1] <= 64:
            self.layout = self.layout or (args[0], args[1])
            index = args[2] - 1
            while len(self.panels) <= index:
                self.panels.append(AxesRef(len(self.panels)))
            self.current = self.panels[index]
            return self.current
        return self._new_axes()

    def _module_call(self, name: str, args, kwargs, receiver: str):
        if name.startswith("builtins."):
            return self._builtin(name.split(".", 1)[1], args, kwargs)
        if name.startswith("np."):
            return self._numpy(name[3:], args, kwargs)
        if name == "plt.style.use":
            if args and isinstance(args[0], str):
                self.style = args[0]
            return None
        if not name.startswith("plt."):
            return UNKNOWN
        fn = name[4:]
        if fn == "subplots":
            return self._subplots(args, kwargs)
        if fn == "figure":
            return FigRef()
        if fn == "subplot":
            return self._subplot(args)
        if fn in ("gca", "axes"):
            return self._axes()
        if fn == "gcf":
            return FigRef()
        if fn == "sca" and args and isinstance(args[0], AxesRef):
            self.current = args[0]
            return None
        if fn in _IGNORED_PLT:
            return None
        if fn in ("suptitle", "colorbar", "figtext", "figlegend"):
            panel = self._axes().panel if fn == "colorbar" else -1
            self._record(panel, {"figtext": "text", "figlegend": "legend"}.get(fn, fn), args, kwargs, "plt")
            return ArtistRef(-1)
        ax = self._axes()
        if fn in ("xticks", "yticks"):
            axis = fn[0]
            ticks = args[0] if args else kwargs.get("ticks")
            labels = args[1] if len(args) > 1 else kwargs.get("labels")
            rest = {k: v for k, v in kwargs.items() if k not in ("ticks", "labels")}
            if ticks is not None:
                self._record(ax.panel, f"set_{axis}ticks", [ticks], {}, "plt")
            if labels is not None or rest:
                self._record(ax.panel, f"set_{axis}ticklabels", [labels] if labels is not None else [], rest, "plt")
            return UNKNOWN
        return self._method(Bound(ax, _PLT_TO_AXES.get(fn, fn)), args, kwargs, "plt")

    def _method(self, bound: Bound, args, kwargs, receiver: str):
        target, name = bound.target, bound.name
        if isinstance(target, AxesRef):
            if name in ("twinx", "twiny"):
                return self._new_axes()
            if name == "set":
                for key, value in kwargs.items():
                    self._record(target.panel, f"set_{key}", [value], {}, receiver)
                return None
            self._record(target.panel, name, args, kwargs, receiver)
            return ArtistRef(target.panel)
        if isinstance(target, FigRef):
            if name == "add_subplot":
                return self._subplot(args) if args else self._new_axes()
            if name == "subplots":
                return self._subplots(args, kwargs)[1]
            if name == "add_axes":
                return self._new_axes()
            if name == "gca":
                return self._axes()
            if name in _FIGURE_METHODS:
                panel = -1
                if name == "colorbar":
                    ax = kwargs.get("ax")
                    panel = ax.panel if isinstance(ax, AxesRef) else self._axes().panel
                self._record(panel, name, args, kwargs, receiver)
                return ArtistRef(-1)
            return None
        if isinstance(target, ArtistRef):
            self._record(target.panel, f"artist.{name}", args, kwargs, receiver)
            return ArtistRef(target.panel)
        if isinstance(target, list):
            return self._list_method(target, name, args)
        if isinstance(target, dict):
            if name == "items":
                return [(k, v) for k, v in target.items()]
            if name == "keys":
                return list(target.keys())
            if name == "values":
                return list(target.values())
            if name == "get" and args and _plain(args[0]) and not isinstance(args[0], (list, dict, set)):
                return target.get(args[0], args[1] if len(args) > 1 else None)
            return UNKNOWN
        if isinstance(target, str):
            return self._str_method(target, name, args)
        return UNKNOWN

    def _list_method(self, lst: list, name: str, args):
        if name == "append" and args and len(lst) < MAX_LEN:
            lst.append(args[0])
            return None
        if name == "extend" and args and isinstance(args[0], (list, tuple)) and len(lst) + len(args[0]) <= MAX_LEN:
            lst.extend(args[0])
            return None
        if name == "index" and args and _plain(args[0]):
            return lst.index(args[0]) if args[0] in lst else UNKNOWN
        if name == "count" and args and _plain(args[0]):
            return lst.count(args[0])
        if name == "copy":
            return type(lst)(lst)
        if name in ("flatten", "ravel", "tolist"):
            return self._flatten(lst) if name != "tolist" else list(lst)
        return UNKNOWN

    @staticmethod
    def _str_method(s: str, name: str, args):
        if name in ("upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip") and not args:
            return getattr(s, name)()
        if name == "join" and args and isinstance(args[0], (list, tuple)) and all(isinstance(x, str) for x in args[0]):
            out = s.join(args[0])
            return out if len(out) <= MAX_LEN else UNKNOWN
        if name == "split" and len(args) <= 1 and all(isinstance(a, str) for a in args):
            return s.split(*args)
        return UNKNOWN

    def _builtin(self, name: str, args, kwargs):
        if kwargs and name not in ("enumerate", "round"):
            return UNKNOWN
        if not all(_plain(a) for a in args) or not all(_plain(v) for v in kwargs.values()):
            return UNKNOWN
        try:
            if name == "range":
                r = range(*args)
                return list(r) if len(r) <= MAX_LEN else UNKNOWN
            if name == "zip":
                return [tuple(t) for t in zip(*args)]
            if name == "enumerate":
                start = kwargs.get("start", args[1] if len(args) > 1 else 0)
                return [(i + start, x) for i, x in enumerate(args[0])] if isinstance(start, int) else UNKNOWN
            if name == "reversed":
                return list(reversed(args[0]))
            if name == "list" and args and isinstance(args[0], dict):
                return list(args[0].keys())
            if name in ("int", "float") and args and isinstance(args[0], str) and len(args[0]) > 50:
                return UNKNOWN
            if name == "round" and not all(isinstance(d, int) and -20 <= d <= 20
                                           for d in list(args[1:]) + list(kwargs.values())):
                return UNKNOWN
            fn = {"len": len, "list": list, "tuple": tuple, "dict": dict, "sorted": sorted, "sum": sum, "min": min,
                  "max": max, "abs": abs, "round": round, "int": int, "float": float, "str": str, "bool": bool,
                  "set": set}[name]
            v = fn(*args, **kwargs)
            return v if _plain(v) else UNKNOWN
        except (TypeError, ValueError, ArithmeticError, KeyError, IndexError):
            return UNKNOWN

    def _numpy(self, fn: str, args, kwargs):
        if not all(_plain(a) for a in args):
            return UNKNOWN
        try:
            if fn == "arange":
                r = [a for a in args if _num(a)]
                if len(r) != len(args) or not r:
                    return UNKNOWN
                start, stop, step = (0, r[0], 1) if len(r) == 1 else (r[0], r[1], r[2] if len(r) > 2 else 1)
                n = int(-(-(stop - start) // step)) if step else 0
                if n > MAX_LEN:
                    return UNKNOWN
                return NpArray(start + k * step for k in range(max(0, n)))
            if fn in ("array", "asarray") and args and isinstance(args[0], (list, tuple)):
                out = NpArray(args[0])
                if id(args[0]) in self.origins:
                    self.origins[id(out)] = self.origins[id(args[0])]
                    self._alive.append(out)
                return out
            if fn in ("zeros", "ones") and args and isinstance(args[0], int) and 0 <= args[0] <= MAX_LEN:
                return NpArray([0.0 if fn == "zeros" else 1.0] * args[0])
            if fn == "linspace" and len(args) >= 2 and _num(args[0]) and _num(args[1]):
                n = args[2] if len(args) > 2 else kwargs.get("num", 50)
                if not isinstance(n, int) or not 1 <= n <= MAX_LEN:
                    return UNKNOWN
                return NpArray(args[0] + (args[1] - args[0]) * k / max(1, n - 1) for k in range(n))
        except (TypeError, ValueError, ArithmeticError):
            return UNKNOWN
        return UNKNOWN


# -------------------------------------------------------------------------------------------- the model
_SERIES_KINDS = {"bar", "barh", "plot", "scatter", "step", "errorbar", "stem", "fill_between", "fill_betweenx",
                 "stackplot", "hist", "pie", "boxplot", "violinplot", "imshow", "pcolormesh", "pcolor", "matshow",
                 "contour", "contourf", "hexbin", "axvline", "axhline"}
_FAMILY = {"bar": "bar", "barh": "bar", "plot": "xy", "scatter": "xy", "step": "xy", "errorbar": "xy", "stem": "xy",
           "fill_between": "area", "fill_betweenx": "area", "stackplot": "area", "boxplot": "box", "violinplot": "box",
           "imshow": "grid", "pcolormesh": "grid", "pcolor": "grid", "matshow": "grid", "axvline": "refline",
           "axhline": "refline"}
_KIND_WORD = {"bar": "bar", "barh": "horizontal bar", "plot": "line", "scatter": "scatter", "step": "step line",
              "fill_between": "area", "stackplot": "stacked area", "hist": "histogram", "pie": "pie",
              "boxplot": "box", "violinplot": "violin", "imshow": "heatmap", "pcolormesh": "heatmap"}
_ALIASES = {"c": "color", "ls": "linestyle", "lw": "linewidth", "ec": "edgecolor", "fc": "facecolor",
            "ms": "markersize", "mfc": "markerfacecolor"}
_FMT_MARKERS = set(".,ov^<>1234sp*hH+xXDd|_8P")
_FMT_COLORS = {"b": "blue", "g": "green", "r": "red", "c": "cyan", "m": "magenta", "y": "yellow", "k": "black",
               "w": "white"}


# series keyword → (category, severity, what, default), worded as the edit engine's keyword edits
_KEYWORDS: dict[str, tuple[str, int, str, Any]] = {
    "marker": ("style", 1, "marker shape", None), "linestyle": ("style", 1, "line style", "-"),
    "linewidth": ("style", 1, "line width", None), "alpha": ("style", 1, "transparency (alpha)", 1.0),
    "cmap": ("style", 2, "colour map", "viridis"), "edgecolor": ("style", 1, "edge colour", None),
    "hatch": ("style", 1, "hatch pattern", None), "width": ("style", 1, "bar width", 0.8),
    "height": ("style", 1, "bar width", 0.8), "s": ("style", 1, "marker size", None),
    "markersize": ("style", 1, "marker size", None), "bins": ("data", 2, "histogram bins", 10),
    "startangle": ("style", 1, "start angle", 0), "explode": ("structure", 1, "pulled-out wedge", None),
    "autopct": ("text", 1, "percentage labels", None), "wedgeprops": ("structure", 2, "wedge shape", None),
    "vmin": ("style", 1, "colour scale minimum", None), "vmax": ("style", 1, "colour scale maximum", None),
    "widths": ("style", 1, "box width", None), "shadow": ("style", 1, "shadow", False),
}


@dataclass
class Series:
    call: Call
    kind: str
    index: int  # order in its panel
    arrays: dict[str, Any]  # role → numeric list, or list of numeric lists (box groups, heatmap rows)
    cats: list | None  # category labels carried by the data (bar x, barh y, plot x strings)
    cat_axis: str
    label: str | None
    style: dict[str, Any]

    @property
    def family(self) -> str:
        return _FAMILY.get(self.kind, self.kind)

    @property
    def primary(self) -> list:
        """The values that identify the series (heights, ys, shares...), flattened."""
        for role in ("y", "y1", "shares", "samples", "groups", "matrix", "x"):
            if role in self.arrays:
                v = self.arrays[role]
                rows = _matrix(v)
                return [x for row in rows for x in row] if rows else list(_numbers(v) or [])
        return []


@dataclass
class Panel:
    index: int
    receiver: str = ""
    series: list[Series] = field(default_factory=list)
    calls: dict[str, list[Call]] = field(default_factory=dict)

    def last(self, method: str) -> Call | None:
        calls = self.calls.get(method)
        return calls[-1] if calls else None

    def all(self, method: str) -> list[Call]:
        return self.calls.get(method, [])


@dataclass
class Figure:
    style: str
    layout: tuple[int, int]
    panels: list[Panel]
    figure_calls: dict[str, list[Call]]
    origins: dict[int, tuple[str, str]]
    keep: Any = None  # the interpreter, keeping the provenance objects alive


def _is_str_list(v) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, str) for x in v)


def _numbers(v) -> list | None:
    """v as a list of numbers (lists of numbers stay the same object, for provenance), else None."""
    if _num(v):
        return [v]
    if isinstance(v, (list, tuple)) and v and all(_num(x) for x in v):
        return v if isinstance(v, list) else list(v)
    return None


def _matrix(v) -> list | None:
    if isinstance(v, list) and v and all(isinstance(r, list) and r and all(_num(x) for x in r) for r in v):
        return v
    return None


def _parse_fmt(fmt: str) -> dict:
    out: dict = {}
    rest = fmt
    for ls in ("--", "-.", "-", ":"):
        if ls in rest:
            out["linestyle"] = ls
            rest = rest.replace(ls, "", 1)
            break
    for ch in rest:
        if ch in _FMT_COLORS:
            out["color"] = _FMT_COLORS[ch]
        elif ch in _FMT_MARKERS:
            out["marker"] = ch
    return out


def _series_from(call: Call, index: int) -> list[Series]:
    kind, args = call.method, list(call.args)
    kw = {_ALIASES.get(k, k): v for k, v in call.kwargs.items()}
    arrays: dict[str, Any] = {}
    cats, cat_axis = None, "x"
    label = kw.get("label") if isinstance(kw.get("label"), str) else None
    if label is not None and label.startswith("_"):
        label = None
    if kind in ("plot", "step", "errorbar", "stem") and args:
        fmt = [a for a in args if isinstance(a, str)]
        data = [a for a in args if not isinstance(a, str)]
        if fmt and kind == "plot":
            for k, v in _parse_fmt(fmt[0]).items():
                kw.setdefault(k, v)
        if data and _is_str_list(data[0]):
            cats = list(data[0])
            if len(data) > 1:
                arrays["y"] = data[1]
        elif len(data) == 1:
            arrays["y"] = data[0]
        elif len(data) >= 2:
            arrays["x"], arrays["y"] = data[0], data[1]
    elif kind in ("bar", "barh"):
        pos = args[0] if args else kw.get("x" if kind == "bar" else "y")
        size = args[1] if len(args) > 1 else kw.get("height" if kind == "bar" else "width")
        cat_axis = "x" if kind == "bar" else "y"
        if _is_str_list(pos):
            cats = list(pos)
        else:
            arrays["x"] = pos  # bar positions: not compared, they only place the categories
        arrays["y"] = size
        if len(args) > 2:
            kw.setdefault("width" if kind == "bar" else "height", args[2])
    elif kind == "scatter":
        if len(args) >= 2:
            if _is_str_list(args[0]):
                cats, arrays["y"] = list(args[0]), args[1]
            else:
                arrays["x"], arrays["y"] = args[0], args[1]
        if len(args) > 2:
            kw.setdefault("s", args[2])
    elif kind in ("fill_between", "fill_betweenx"):
        for role, v in zip(("x", "y1", "y2"), args):
            arrays[role] = v
    elif kind == "stackplot" and len(args) >= 2:
        labels = kw.get("labels") if isinstance(kw.get("labels"), (list, tuple)) else []
        colors = kw.get("colors") if isinstance(kw.get("colors"), (list, tuple)) else []
        out = []
        for k, y in enumerate(args[1:]):
            style = {key: v for key, v in kw.items() if key not in ("labels", "colors")}
            if k < len(colors):
                style["color"] = colors[k]
            lab = labels[k] if k < len(labels) and isinstance(labels[k], str) else None
            x_cats = list(args[0]) if _is_str_list(args[0]) else None
            arr = {"y": y} if x_cats else {"x": args[0], "y": y}
            out.append(Series(call, kind, index + k, arr, x_cats, "x", lab, style))
        return out
    elif kind == "hist" and args:
        arrays["samples"] = args[0]
        if len(args) > 1:
            kw.setdefault("bins", args[1])
    elif kind == "pie" and args:
        arrays["shares"] = args[0]
        if _is_str_list(kw.get("labels")):
            cats = list(kw["labels"])
    elif kind in ("boxplot", "violinplot") and args:
        arrays["groups"] = args[0]
        if _is_str_list(kw.get("labels")) or _is_str_list(kw.get("tick_labels")):
            cats = list(kw.get("labels") or kw.get("tick_labels"))
    elif kind in ("imshow", "pcolormesh", "pcolor", "matshow", "contour", "contourf", "hexbin") and args:
        arrays["matrix"] = args[-1] if kind != "hexbin" else args[0]
        cat_axis = "y"
    elif kind in ("axvline", "axhline"):
        arrays["x" if kind == "axvline" else "y"] = args[0] if args else kw.get("x" if kind == "axvline" else "y", 0)
    style = {k: v for k, v in kw.items() if k not in ("label", "labels", "x", "y", "height", "tick_labels")}
    return [Series(call, kind, index, arrays, cats, cat_axis, label, style)]


def build(code: str) -> Figure:
    """The figure model of a program; CandidateUnparseable if it is not Python."""
    if not isinstance(code, str) or not code.strip():
        raise CandidateUnparseable("the code is empty")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        msg = e.msg if isinstance(e, SyntaxError) else type(e).__name__
        line = f" at line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        raise CandidateUnparseable(f"Python syntax error{line}: {msg}") from None
    interp = Interpreter(tree).run()
    n_panels = max(1, len(interp.panels))
    panels = [Panel(k) for k in range(n_panels)]
    figure_calls: dict[str, list[Call]] = {}
    for call in interp.calls:
        if call.panel < 0 or call.method == "colorbar":
            figure_calls.setdefault(call.method, []).append(call)
            continue
        panel = panels[call.panel] if 0 <= call.panel < n_panels else panels[0]
        if not panel.receiver and call.receiver:
            panel.receiver = call.receiver
        if call.method in _SERIES_KINDS:
            panel.series += _series_from(call, len(panel.series))
        else:
            panel.calls.setdefault(call.method, []).append(call)
    layout = interp.layout or (1, n_panels)
    return Figure(interp.style, layout, panels, figure_calls, interp.origins, interp)


# ------------------------------------------------------------------------------------------------ naming
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]


def _where(receiver: str, panel: int, n_panels: int) -> str:
    """The edit engine's name for the axes a call draws on (ax1 → 'first subplot', fig/plt → 'figure')."""
    known = {"ax1": "first subplot", "ax2": "second subplot", "fig": "figure", "plt": "figure"}
    if receiver in known:
        return known[receiver]
    if n_panels > 1 and 0 <= panel < len(_ORDINALS):
        return f"{_ORDINALS[panel]} subplot"
    return "chart"


def _color_name(value) -> str:
    return COLOR_NAME.get(str(value).lower(), str(value))


def _norm_color(value) -> str | None:
    if not isinstance(value, str):
        return None if value is None else str(value)
    v = value.strip().lower()
    try:
        from matplotlib.colors import to_hex

        return to_hex(v)
    except (ImportError, ValueError):
        return v


def _show(v) -> str:
    return "the default" if v is None else repr(v) if isinstance(v, str) else str(v)


def _same(a, b) -> bool:
    if _num(a) and _num(b):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------------------------- diff
def diff(reference_code: str, candidate_code: str) -> list[dict]:
    try:
        ref = build(reference_code)
    except CandidateUnparseable as e:
        raise StructuralDiffError(f"the chart reference cannot be parsed: {e}") from None
    try:
        cand = build(candidate_code)
    except CandidateUnparseable as e:
        return unparseable_candidate(TASK, str(e))
    return _Differ(ref, cand).run()


class _Differ:
    def __init__(self, ref: Figure, cand: Figure):
        self.ref, self.cand = ref, cand
        self.out = Findings(TASK)
        self.n_panels = len(ref.panels)

    def run(self) -> list[dict]:
        self._figure()
        for k, panel in enumerate(self.ref.panels):
            if k < len(self.cand.panels):
                self._panel(panel, self.cand.panels[k])
        return self.out.dicts()

    def where(self, call: Call | None, panel: Panel) -> str:
        receiver = call.receiver if call is not None and call.receiver else panel.receiver
        return _where(receiver, panel.index, self.n_panels)

    # ------------------------------------------------------------------------------- figure level
    def _figure(self) -> None:
        ref, cand, out = self.ref, self.cand, self.out
        if ref.style != cand.style:
            out.add("style", 2, "whole figure", f"The overall look (background, fonts, grid) follows the "
                                                f"'{cand.style}' style, not '{ref.style}'.")
        n_ref, n_cand = len(ref.panels), len(cand.panels)
        if n_ref == n_cand and n_ref > 1 and ref.layout != cand.layout:
            (r, c), (R, C) = cand.layout, ref.layout
            out.add("structure", 3, "subplot layout",
                    f"The panels are arranged in {r} row(s) × {c} column(s), not {R} × {C}.")
        for k in range(n_cand, n_ref):
            name = f"{_ORDINALS[k]} subplot" if k < len(_ORDINALS) else f"subplot {k + 1}"
            if any(ref.panels[k].series) or ref.panels[k].calls:
                out.add("structure", 3, name, f"The {name} is missing.")
        for k in range(n_ref, n_cand):
            if any(cand.panels[k].series):
                out.add("structure", 2, "extra subplot", "An extra subplot is drawn.")
        fake = Panel(-1, "fig")
        self._title(_last(ref.figure_calls, "suptitle"), _last(cand.figure_calls, "suptitle"), fake, "title")
        for method, what in (("supxlabel", "x-axis label"), ("supylabel", "y-axis label")):
            self._title(_last(ref.figure_calls, method), _last(cand.figure_calls, method), fake, what)
        self._texts(ref.figure_calls.get("text", []), cand.figure_calls.get("text", []), fake)

    # -------------------------------------------------------------------------------- panel level
    def _panel(self, rp: Panel, cp: Panel) -> None:
        self._title(rp.last("set_title"), cp.last("set_title"), rp, "title")
        for axis in "xy":
            self._title(rp.last(f"set_{axis}label"), cp.last(f"set_{axis}label"), rp, f"{axis}-axis label")
        drops = self._categories(rp, cp)
        self._series(rp, cp, drops)
        self._legend(rp, cp)
        self._grid(rp, cp)
        self._annotations(rp, cp)
        self._texts(rp.all("text"), cp.all("text"), rp)
        self._axes_details(rp, cp)
        self._artist_colors(rp, cp)

    def _title(self, old: Call | None, new: Call | None, panel: Panel, what: str) -> None:
        """Titles and axis labels: missing, extra, misspelled, different words, font size."""
        t_old = _text_arg(old)
        t_new = _text_arg(new)
        where = self.where(old if old is not None else new, panel)
        loc = f"{what} of the {where}"
        title = what == "title"
        if t_old and not t_new:
            self.out.add("text", 2 if title else 1, loc, f"The {what} is missing.")
        elif t_new and not t_old:
            self.out.add("text", 2 if title else 1, loc, f"An extra {what} '{t_new}' appears.")
        elif t_old and t_old != t_new:
            if is_typo(t_old, t_new):
                self.out.add("text", 1, loc, f"The {what} is misspelled: '{t_new}' instead of '{t_old}'.")
            else:
                self.out.add("text", 2, loc, f"The {what} reads '{t_new}' instead of '{t_old}'.")
        if t_old and t_new:
            self._fonts(old, new, panel)

    def _fonts(self, old: Call, new: Call, panel: Panel) -> None:
        where = self.where(old, panel)
        a, b = old.kwargs.get("fontsize", old.kwargs.get("size")), new.kwargs.get("fontsize", new.kwargs.get("size"))
        if not _same(a, b):
            self.out.add("style", 1, f"font size in the {where}", f"The font size is {_show(b)} instead of {_show(a)}.")
        a, b = old.kwargs.get("fontweight", "normal"), new.kwargs.get("fontweight", "normal")
        if a != b:
            self.out.add("style", 1, f"font weight in the {where}", f"The font weight is {_show(b)} instead of "
                                                                    f"{_show(a)}.")

    # ----------------------------------------------------------------------------------- categories
    def _category_lists(self, panel: Panel) -> dict[str, list]:
        out: dict[str, list] = {}
        for axis in "xy":
            call = panel.last(f"set_{axis}ticklabels")
            if call is not None and call.args and _is_str_list(call.args[0]):
                out[axis] = call.args[0]
        for s in panel.series:
            if s.cats and s.cat_axis not in out:
                out[s.cat_axis] = s.cats
        return out

    def _categories(self, rp: Panel, cp: Panel) -> dict[str, tuple[list[int], list[int], int]]:
        """Category labels: renamed (text), dropped or added (data). Returns per reference axis the reference
        indices dropped, the candidate indices added and the candidate length, to align the data lists with."""
        ref_lists, cand_lists = self._category_lists(rp), self._category_lists(cp)
        if len(ref_lists) == len(cand_lists) == 1 and set(ref_lists) != set(cand_lists):
            cand_lists = {next(iter(ref_lists)): next(iter(cand_lists.values()))}  # bars turned on their side
        hint = self._dropped_by_data(rp, cp)
        result = {}
        for axis, old in ref_lists.items():
            new = cand_lists.get(axis)
            if new is None:
                continue
            old, new = list(old), list(new)
            dropped, added = [], []
            renamed: list[tuple[int, str, str]] = []
            if hint and len(old) - len(hint) == len(new):
                # the data says which points went: the labels left over in place may also be renamed
                kept = [i for i in range(len(old)) if i not in hint]
                dropped = list(hint)
                renamed = [(i, old[i], b) for i, b in zip(kept, new) if old[i] != b]
            else:
                for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
                    if op == "equal":
                        continue
                    k = min(i2 - i1, j2 - j1) if op == "replace" else 0
                    renamed += [(i1 + t, old[i1 + t], new[j1 + t]) for t in range(k)]
                    dropped += list(range(i1 + k, i2))
                    added += list(range(j1 + k, j2))
            if len(renamed) > 4:
                self.out.add("text", 2, f"category labels of the {self.where(None, rp)}",
                             f"The category labels read {', '.join(map(str, new))} instead of {', '.join(map(str, old))}.")
            else:
                for i, a, b in renamed:
                    self.out.add("text", 1 if is_typo(a, b) else 2, f"category label {i + 1} ('{a}')",
                                 f"The category label '{a}' reads '{b}'.")
            for i in dropped:
                what = f"'{old[i]}'"
                self.out.add("data", 3, f"data point {what}", f"The data point {what} is missing from the chart.",
                             key=("drop", rp.index, what))
            for j in added:
                what = f"'{new[j]}'"
                self.out.add("data", 2, f"data point {what}", f"An extra data point {what} appears in the chart.",
                             key=("extra", rp.index, what))
            result[axis] = (dropped, added, len(new))
        return result

    @staticmethod
    def _dropped_by_data(rp: Panel, cp: Panel) -> list[int] | None:
        """Reference indices of points the candidate's data leaves out, when the data is the reference's with
        those points deleted and nothing else (the series paired by order within their family)."""
        found = None
        for family in dict.fromkeys(s.family for s in rp.series):
            rs = [s for s in rp.series if s.family == family]
            cs = [s for s in cp.series if s.family == family]
            for r, c in zip(rs, cs):
                old, new = _points(r), _points(c)
                if old is None or new is None or len(new) >= len(old):
                    continue
                ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
                if any(op not in ("equal", "delete") for op, *_ in ops):
                    continue
                gone = [i for op, i1, i2, _, _ in ops if op == "delete" for i in range(i1, i2)]
                if found is not None and gone != found:
                    return None
                found = gone
        return found

    # --------------------------------------------------------------------------------------- series
    def _series(self, rp: Panel, cp: Panel, drops: dict) -> None:
        pairs: list[tuple[Series, Series]] = []
        left_ref: list[Series] = []
        left_cand: list[Series] = []
        for family in dict.fromkeys([s.family for s in rp.series] + [s.family for s in cp.series]):
            rs = [s for s in rp.series if s.family == family]
            cs = [s for s in cp.series if s.family == family]
            for i, j in align(rs, cs, _series_similarity, 0.5, fill_gaps=True):
                if i is not None and j is not None:
                    pairs.append((rs[i], cs[j]))
                elif i is not None:
                    left_ref.append(rs[i])
                else:
                    left_cand.append(cs[j])
        # a series of another kind in place of a missing one: the chart type changed
        left_ref.sort(key=lambda s: s.index)
        left_cand.sort(key=lambda s: s.index)
        k = min(len(left_ref), len(left_cand))
        changed = list(zip(left_ref[:k], left_cand[:k]))
        for r, c in changed:
            where = self.where(r.call, rp)
            self.out.add("structure", 3, f"{_KIND_WORD.get(r.kind, r.kind)} series of the {where}",
                         f"The {_KIND_WORD.get(r.kind, r.kind)} series is drawn as a "
                         f"{_KIND_WORD.get(c.kind, c.kind)} chart instead.")
        for r in left_ref[k:]:
            where = self.where(r.call, rp)
            name = f"'{r.label}'" if r.label else "one"
            self.out.add("structure", 3, f"{name} series of the {where}", f"The {name} series ({r.kind}) is not drawn.")
        for c in left_cand[k:]:
            where = self.where(c.call, rp)
            name = f" '{c.label}'" if c.label else ""
            self.out.add("structure", 2, f"extra {c.kind} series of the {where}",
                         f"An extra {_KIND_WORD.get(c.kind, c.kind)} series{name} is drawn.")
        alignments: dict = {}
        for (r, c), in_family in [(p, True) for p in pairs] + [(p, False) for p in changed]:
            same_kind = r.kind == c.kind
            if not same_kind and in_family:
                self._kind_change(r, c, rp)
            self._data(r, c, rp, drops, alignments)
            self._label(r, c)
            self._colors(r, c, rp)
            if same_kind:
                self._keywords(r, c, rp)
                self._stacking(r, c, rp)

    def _stacking(self, r: Series, c: Series, rp: Panel) -> None:
        """Stacked bars start where the previous series ends; only whether they are stacked is compared (the
        offsets follow from the data, already compared)."""
        if r.family != "bar":
            return
        key = "bottom" if r.kind == "bar" else "left"

        def stacked(s: Series) -> bool:
            v = _numbers(s.style.get(key))
            return v is not None and any(x != 0 for x in v)

        a, b = stacked(r), stacked(c)
        if a != b:
            where = self.where(r.call, rp)
            desc = "The bars are not stacked: they all start at zero." if a else \
                "The bars are stacked on top of other bars instead of starting at zero."
            self.out.add("structure", 3, f"bars of the {where}", desc, key=("stacking", rp.index))

    def _kind_change(self, r: Series, c: Series, rp: Panel) -> None:
        where = self.where(r.call, rp)
        if {r.kind, c.kind} == {"bar", "barh"}:
            was, now = ("vertical", "horizontal") if r.kind == "bar" else ("horizontal", "vertical")
            self.out.add("structure", 3, f"bars of the {where}", f"The bars are {now} instead of {was}.")
        elif r.kind == "plot" and c.kind == "scatter":
            self.out.add("structure", 3, f"line series of the {where}",
                         "A line series is drawn as unconnected scatter points.")
        elif r.kind == "scatter" and c.kind == "plot":
            self.out.add("structure", 3, f"scatter series of the {where}",
                         "A scatter series is drawn as a connected line.")
        else:
            self.out.add("structure", 3, f"{_KIND_WORD.get(r.kind, r.kind)} series of the {where}",
                         f"The {_KIND_WORD.get(r.kind, r.kind)} series is drawn as a "
                         f"{_KIND_WORD.get(c.kind, c.kind)} chart instead.")

    def _series_desc(self, lst, series: Series) -> str:
        origin = self.ref.origins.get(id(lst))
        if origin:
            var, name = origin
            return f"'{var}'" + (f" ({name})" if name else "")
        if series.label:
            return f"the '{series.label}' series"
        return f"the {_KIND_WORD.get(series.kind, series.kind)} series"

    def _data(self, r: Series, c: Series, rp: Panel, drops: dict, alignments: dict) -> None:
        for role, old in r.arrays.items():
            new = c.arrays.get(role)
            if new is None or (role == "x" and r.family == "bar"):
                continue
            om, nm = _matrix(old), _matrix(new)
            if om is not None and nm is not None:
                self._rows(om, nm, r, rp, drops, alignments)
                continue
            o, n = _numbers(old), _numbers(new)
            if o is None or n is None:
                continue
            self._values(o, n, r, rp, drops.get(r.cat_axis), alignments)

    def _alignment(self, n_ref: int, n_cand: int, known, alignments: dict, seq_ref, seq_cand):
        """(dropped ref indices, added cand indices) aligning a reference list with a candidate one: from the
        category labels when they explain the lengths, else from lists of the same lengths seen before in this
        panel (parallel lists), else from the values themselves."""
        if known is not None:
            dropped, added, n_c = known
            if n_ref - len(dropped) + len(added) == n_cand and n_c == n_cand:
                return dropped, added, True
        if (n_ref, n_cand) in alignments:
            return alignments[(n_ref, n_cand)] + (True,)
        dropped, added = [], []
        sm = difflib.SequenceMatcher(None, [_key(x) for x in seq_ref], [_key(x) for x in seq_cand], autojunk=False)
        for op, i1, i2, j1, j2 in sm.get_opcodes():
            if op in ("delete", "replace") and i2 - i1 > j2 - j1:
                dropped += list(range(i1 + (j2 - j1), i2))
            if op in ("insert", "replace") and j2 - j1 > i2 - i1:
                added += list(range(j1 + (i2 - i1), j2))
        alignments[(n_ref, n_cand)] = (dropped, added)
        return dropped, added, False

    def _point_name(self, i: int, r: Series, rp: Panel) -> str:
        cats = r.cats or self._category_lists(rp).get(r.cat_axis)
        return f"'{cats[i]}'" if cats and i < len(cats) else f"point {i + 1}"

    def _report_drops(self, dropped, added, r: Series, rp: Panel, explained: bool) -> None:
        """Missing points (one error each, shared by parallel lists through the key); added points unless the
        category labels or a parallel list already explained them."""
        if len(dropped) > 3 and not explained:
            names = ", ".join(self._point_name(i, r, rp) for i in dropped)
            self.out.add("data", 3, f"data points of {self._series_desc(None, r)}",
                         f"{len(dropped)} data points are missing from the chart: {names}.",
                         key=("drops", rp.index, tuple(dropped)))
            dropped = []
        for i in dropped:
            what = self._point_name(i, r, rp)
            self.out.add("data", 3, f"data point {what}", f"The data point {what} is missing from the chart.",
                         key=("drop", rp.index, what))
        if len(added) > 3 and not explained:
            self.out.add("data", 2, f"data points of {self._series_desc(None, r)}",
                         f"{len(added)} extra data points appear in the chart.", key=("extras", rp.index, len(added)))
            added = []
        for j in [] if explained else added:
            what = f"point {j + 1}"
            self.out.add("data", 2, f"data point {what}", f"An extra data point {what} appears in the chart.",
                         key=("extra", rp.index, what))

    def _values(self, old: list, new: list, r: Series, rp: Panel, known, alignments: dict) -> None:
        if len(old) != len(new):
            dropped, added, explained = self._alignment(len(old), len(new), known, alignments, old, new)
            self._report_drops(dropped, added, r, rp, explained)
            keep_ref = [i for i in range(len(old)) if i not in set(dropped)]
            keep_cand = [j for j in range(len(new)) if j not in set(added)]
            if len(keep_ref) != len(keep_cand):
                return
            index = keep_ref
            a, b = [old[i] for i in keep_ref], [new[j] for j in keep_cand]
        else:
            index, a, b = list(range(len(old))), old, new
        desc = self._series_desc(old, r)
        changed = [k for k in range(len(a)) if not _same(a[k], b[k])]
        if not changed:
            return
        key = id(old) if id(old) in self.ref.origins else (rp.index, r.index, id(old))
        if len(changed) == 2 and _same(a[changed[0]], b[changed[1]]) and _same(a[changed[1]], b[changed[0]]):
            i, j = index[changed[0]], index[changed[1]]
            self.out.add("data", 2, f"points {i + 1} and {j + 1} of {desc}",
                         f"The values of points {i + 1} and {j + 1} are swapped.", key=("swap", key, i, j))
            return
        severities = [scale_severity((b[k] - a[k]) / abs(a[k]) if a[k] else 1.0) for k in changed]
        if len(changed) > 3 or (len(a) >= 3 and len(changed) == len(a)):  # a wrong series, not wrong points
            k = changed[0]
            self.out.add("data", max(severities), f"data of {desc}",
                         f"The values of {desc} differ at {len(changed)} of {len(a)} points; for example point "
                         f"{index[k] + 1} is {b[k]} instead of {a[k]}.", key=("values", key))
            return
        for k, sev in zip(changed, severities):
            i = index[k]
            self.out.add("data", sev, f"data point {i + 1} of {desc}",
                         f"The value plotted for point {i + 1} is {b[k]} instead of {a[k]}.", key=("value", key, i))

    def _rows(self, old: list, new: list, r: Series, rp: Panel, drops: dict, alignments: dict) -> None:
        """A list of lists (box groups, heatmap rows): whole rows dropped or added, then values per row."""
        axis = "y" if r.family == "grid" else "x"
        if len(old) != len(new):
            dropped, added, explained = self._alignment(len(old), len(new), drops.get(axis), alignments, old, new)
            self._report_drops(dropped, added, r, rp, explained)
            keep_ref = [i for i in range(len(old)) if i not in set(dropped)]
            keep_cand = [j for j in range(len(new)) if j not in set(added)]
        else:
            keep_ref, keep_cand = list(range(len(old))), list(range(len(new)))
        for i, j in zip(keep_ref, keep_cand):
            self._values(old[i], new[j], r, rp, None, {})

    def _label(self, r: Series, c: Series) -> None:
        if r.label == c.label:
            return
        if r.label and c.label:
            self.out.add("text", 1 if is_typo(r.label, c.label) else 2, f"legend entry '{r.label}'",
                         f"The series labelled '{r.label}' is labelled '{c.label}'.")
        elif r.label:
            self.out.add("text", 2, f"legend entry '{r.label}'", f"The series labelled '{r.label}' has no label.")
        else:
            self.out.add("text", 1, f"legend entry '{c.label}'", f"An extra legend label '{c.label}' appears.")

    def _colors(self, r: Series, c: Series, rp: Panel) -> None:
        for key in ("color", "colors", "facecolor"):
            old, new = r.style.get(key), c.style.get(key)
            if old is None or new is None:
                continue
            olds = old if isinstance(old, (list, tuple)) else [old]
            news = new if isinstance(new, (list, tuple)) else [new]
            for a, b in zip(olds, news):
                self._color_change(a, b)

    def _color_change(self, a, b) -> None:
        if not isinstance(a, str) or not isinstance(b, str) or _norm_color(a) == _norm_color(b):
            return
        def named(c: str) -> str:
            return _color_name(c) if _color_name(c) == c else f"{_color_name(c)} ({c})"

        self.out.add("style", 2, f"{_color_name(a)} elements", f"Elements drawn in {named(a)} are {named(b)}.",
                     key=("color", _norm_color(a), _norm_color(b)))

    def _keywords(self, r: Series, c: Series, rp: Panel) -> None:
        where = self.where(r.call, rp)
        for key, (category, severity, what, default) in _KEYWORDS.items():
            if key == "marker" and r.kind == "scatter":
                default = "o"
            old, new = r.style.get(key, default), c.style.get(key, default)
            if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) != len(new):
                continue  # a list keyword that lost an entry with a dropped point (pie explode)
            if _same(old, new) or old is UNKNOWN or new is UNKNOWN:
                continue
            if key == "edgecolor" and _norm_color(old) == _norm_color(new):
                continue
            self.out.add(category, severity, f"{what} in the {where}", f"The {what} is {_show(new)} instead of "
                                                                       f"{_show(old)}.")

    # ------------------------------------------------------------------------------ other elements
    def _legend(self, rp: Panel, cp: Panel) -> None:
        old, new = rp.last("legend"), cp.last("legend")
        where = self.where(old or new, rp)
        if old is not None and new is None:
            self.out.add("structure", 2, f"legend of the {where}", "The legend is missing.")
        elif new is not None and old is None:
            self.out.add("structure", 1, f"legend of the {where}", "A legend is shown that should not be there.")
        elif old is not None:
            a, b = old.kwargs.get("loc", "best"), new.kwargs.get("loc", "best")
            if a != b:
                self.out.add("structure", 1, f"legend position in the {where}",
                             f"The legend position is {_show(b)} instead of {_show(a)}.")
            a, b = old.kwargs.get("frameon", True), new.kwargs.get("frameon", True)
            if a != b:
                self.out.add("style", 1, f"legend of the {where}",
                             f"The legend is drawn {'with' if b else 'without'} a frame.")

    def _grid(self, rp: Panel, cp: Panel) -> None:
        def visible(call: Call | None) -> bool:
            return call is not None and not (call.args and call.args[0] is False) \
                and call.kwargs.get("visible", True) is not False

        old, new = rp.last("grid"), cp.last("grid")
        where = self.where(old or new, rp)
        if visible(old) and not visible(new):
            self.out.add("style", 1, f"grid of the {where}", "The grid lines are missing.")
        elif visible(new) and not visible(old):
            self.out.add("style", 1, f"grid of the {where}", "Grid lines are drawn that should not be there.")
        elif visible(old):
            for key, what, default in (("linestyle", "line style", "-"), ("alpha", "transparency (alpha)", 1.0),
                                       ("axis", "grid axes", "both"), ("linewidth", "line width", None)):
                kw_old = {_ALIASES.get(k, k): v for k, v in old.kwargs.items()}
                kw_new = {_ALIASES.get(k, k): v for k, v in new.kwargs.items()}
                a, b = kw_old.get(key, default), kw_new.get(key, default)
                if not _same(a, b):
                    self.out.add("style", 1, f"{what} in the {where}", f"The {what} is {_show(b)} instead of {_show(a)}.")

    def _annotations(self, rp: Panel, cp: Panel) -> None:
        for method, missing in (("annotate", "The annotation arrow and text is missing."),
                                ("bar_label", "The value labels on the bars are missing.")):
            olds, news = rp.all(method), cp.all(method)
            for k, old in enumerate(olds):
                where = self.where(old, rp)
                if k >= len(news):
                    self.out.add("text", 2, f"annotations of the {where}", missing)
                    continue
                new = news[k]
                if method == "annotate":
                    a, b = _text_arg(old), _text_arg(new)
                    if a and b and a != b:
                        self.out.add("text", 1 if is_typo(a, b) else 2, f"annotations of the {where}",
                                     f"The annotation reads '{b}' instead of '{a}'.")
                a, b = old.kwargs.get("fontsize"), new.kwargs.get("fontsize")
                if not _same(a, b):
                    self.out.add("style", 1, f"font size in the {where}",
                                 f"The font size is {_show(b)} instead of {_show(a)}.")
            for new in news[len(olds):]:
                where = self.where(new, rp)
                what = f"annotation '{_text_arg(new)}'" if method == "annotate" else "value labels on the bars"
                self.out.add("text", 1, f"annotations of the {where}", f"An extra {what} appears.")

    def _texts(self, olds: list[Call], news: list[Call], panel: Panel) -> None:
        """Free text (ax.text): string contents compared in order; numbers drawn from data are the data's."""
        for k, old in enumerate(olds):
            where = self.where(old, panel)
            a = old.args[2] if len(old.args) > 2 else None
            if k >= len(news):
                if isinstance(a, str) and a.strip():
                    self.out.add("text", 2, f"text of the {where}", f"The text '{a}' is missing.")
                continue
            new = news[k]
            b = new.args[2] if len(new.args) > 2 else None
            if isinstance(a, str) and isinstance(b, str) and a != b:
                self.out.add("text", 1 if is_typo(a, b) else 2, f"text of the {where}",
                             f"The text reads '{b}' instead of '{a}'.")
            fa, fb = old.kwargs.get("fontsize"), new.kwargs.get("fontsize")
            if not _same(fa, fb):
                self.out.add("style", 1, f"font size in the {where}",
                             f"The font size is {_show(fb)} instead of {_show(fa)}.")
        for new in news[len(olds):]:
            b = new.args[2] if len(new.args) > 2 else None
            if isinstance(b, str) and b.strip():
                self.out.add("text", 1, f"text of the {self.where(new, panel)}", f"An extra text '{b}' appears.")

    def _axes_details(self, rp: Panel, cp: Panel) -> None:
        for axis in "xy":
            old, new = rp.last(f"invert_{axis}axis"), cp.last(f"invert_{axis}axis")
            if (old is None) != (new is None):
                where = self.where(old or new, rp)
                what = "category order" if axis == "y" else "order"
                self.out.add("structure", 2, f"{axis}-axis of the {where}",
                             f"The {what} on the {axis}-axis is reversed.")
            old, new = rp.last(f"set_{axis}scale"), cp.last(f"set_{axis}scale")
            a = old.args[0] if old is not None and old.args else "linear"
            b = new.args[0] if new is not None and new.args else "linear"
            if a != b:
                self.out.add("structure", 2, f"{axis}-axis of the {self.where(old or new, rp)}",
                             f"The {axis}-axis scale is {_show(b)} instead of {_show(a)}.")
            old, new = rp.last(f"set_{axis}lim"), cp.last(f"set_{axis}lim")
            a = tuple(old.args[0]) if old is not None and old.args and isinstance(old.args[0], (list, tuple)) \
                else tuple(old.args) if old is not None else None
            b = tuple(new.args[0]) if new is not None and new.args and isinstance(new.args[0], (list, tuple)) \
                else tuple(new.args) if new is not None else None
            if not _same(a, b) and (a is None or all(_num(x) for x in a)) and (b is None or all(_num(x) for x in b)):
                self.out.add("structure", 1, f"{axis}-axis of the {self.where(old or new, rp)}",
                             f"The {axis}-axis range is {_show(list(b) if b else None)} instead of "
                             f"{_show(list(a) if a else None)}.")
            old, new = rp.last(f"set_{axis}ticklabels"), cp.last(f"set_{axis}ticklabels")
            if old is not None and new is not None:
                a, b = old.kwargs.get("rotation", 0), new.kwargs.get("rotation", 0)
                if not _same(a, b):
                    self.out.add("text", 1, f"{axis}-axis tick labels of the {self.where(old, rp)}",
                                 f"The tick labels are rotated by {_show(b)} instead of {_show(a)} degrees.")
        off = [any(c.args and c.args[0] == "off" for c in p.all("axis")) for p in (rp, cp)]
        if off[0] != off[1]:
            self.out.add("structure", 1, f"axes of the {self.where(None, rp)}",
                         "The axes are hidden." if off[1] else "The axes are shown but should be hidden.")
        ref_bar = any(c.panel == rp.index for c in self.ref.figure_calls.get("colorbar", []))
        cand_bar = any(c.panel == cp.index for c in self.cand.figure_calls.get("colorbar", []))
        if ref_bar != cand_bar:
            where = self.where(None, rp)
            self.out.add("structure", 2, f"colour bar of the {where}",
                         "The colour bar is missing." if ref_bar else "An extra colour bar is drawn.")

    def _artist_colors(self, rp: Panel, cp: Panel) -> None:
        """Colours set on returned artists (box patches, bars): compared in order."""
        def colors(p: Panel) -> list:
            out = []
            for method in ("artist.set_facecolor", "artist.set_color"):
                out += [c.args[0] for c in p.all(method) if c.args]
            return out

        for a, b in zip(colors(rp), colors(cp)):
            self._color_change(a, b)


def _last(calls: dict, method: str) -> Call | None:
    found = calls.get(method)
    return found[-1] if found else None


def _text_arg(call: Call | None) -> str:
    if call is None:
        return ""
    v = call.args[0] if call.args else call.kwargs.get("label", call.kwargs.get("text", call.kwargs.get("s")))
    return v.strip() if isinstance(v, str) else ""


def _points(s: Series) -> list | None:
    """The series' main values as hashable points: numbers, or whole rows for box groups and heatmaps."""
    for role in ("y", "y1", "shares", "samples", "groups", "matrix"):
        if role in s.arrays:
            v = s.arrays[role]
            rows = _matrix(v)
            if rows is not None:
                return [tuple(r) for r in rows]
            return _numbers(v)
    return None


def _key(x):
    return tuple(x) if isinstance(x, list) else x


def _series_similarity(a: Series, b: Series) -> float:
    if a.label and b.label and a.label == b.label:
        return 1.0
    pa, pb = a.primary, b.primary
    data = dice([round(x, 6) for x in pa if _num(x)], [round(x, 6) for x in pb if _num(x)]) if pa or pb else 0.5
    same_kind = 0.1 if a.kind == b.kind else 0.0
    return min(1.0, 0.2 + 0.7 * data + same_kind)
