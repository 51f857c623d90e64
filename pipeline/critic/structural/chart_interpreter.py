"""The chart interpreter: reads a matplotlib program into its figure model without running it.

The candidate is untrusted code, so it is never executed: the program is parsed (Python AST) and walked by
a small abstract interpreter that knows literals, module-level variables, loops over known sequences, a few
builtins and numpy constructors, and records every plotting call with its resolved arguments (a bar call
inside `for name, vals in data.items()` is recorded once per series, with that series' values). Work is
bounded (steps, loop lengths, sizes); whatever it cannot know becomes UNKNOWN and is not compared. It also
notes where module-level data lists come from (variable and series), for the differ's wording. `build` is
the whole reading: code → AST → recorded calls → `chart_figure.Figure`.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from typing import Any

from pipeline.critic.structural.base import CandidateUnparseable
from pipeline.critic.structural.chart_figure import UNKNOWN, Call, Figure, assemble, is_number

MAX_STEPS = 20000  # statements, loop iterations and comprehension items together
MAX_LOOP = 500  # iterations of one loop
MAX_LEN = 10000  # elements of a list, characters of a string
MAX_CALLS = 3000  # recorded plotting calls


# ------------------------------------------------------------------- the values and references it knows
class NpArray(list):
    """A numpy array as a list: arithmetic is element-wise."""


# what a name can stand for besides a plain value: a module, the figure, an axes, an artist, a bound method
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


# control flow: the work budget is spent; a loop's break and continue
class _Budget(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# the modules, functions and builtins it knows
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
                return -v if is_number(v) else NpArray(-x if is_number(x) else UNKNOWN for x in v) \
                    if isinstance(v, NpArray) else UNKNOWN
            if isinstance(e.op, ast.UAdd):
                return v if is_number(v) else UNKNOWN
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
            if isinstance(a, list) and is_number(b):
                return NpArray(self._binop(op, x, b) for x in a)
            if is_number(a) and isinstance(b, list):
                return NpArray(self._binop(op, a, y) for y in b)
            return UNKNOWN
        if is_number(a) and is_number(b):
            try:
                if isinstance(op, ast.Pow) and (abs(b) > 64 or abs(a) > 10 ** 6):
                    return UNKNOWN
                fn = _ARITHMETIC.get(type(op))
                if fn is None:
                    return UNKNOWN
                v = fn(a, b)
                return v if is_number(v) and not (isinstance(v, int) and abs(v) > 10 ** 18) else UNKNOWN
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
                r = [a for a in args if is_number(a)]
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
            if fn == "linspace" and len(args) >= 2 and is_number(args[0]) and is_number(args[1]):
                n = args[2] if len(args) > 2 else kwargs.get("num", 50)
                if not isinstance(n, int) or not 1 <= n <= MAX_LEN:
                    return UNKNOWN
                return NpArray(args[0] + (args[1] - args[0]) * k / max(1, n - 1) for k in range(n))
        except (TypeError, ValueError, ArithmeticError):
            return UNKNOWN
        return UNKNOWN


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
    return assemble(interp.calls, len(interp.panels), interp.layout, interp.style, interp.origins,
                    keep=interp)
