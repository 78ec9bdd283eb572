"""The binding against include/zsmalloc.h: every function declared there has its
argtypes and restype set to the C types, every struct has the same fields in the same
order and types, and the constants agree."""

import ctypes
import re

import pytest

import zsmalloc
from zsutil import HEADER, LIB


def _read_header():
    with open(HEADER) as f:
        raw = f.read()
    defines = {m[0]: m[1] for m in re.findall(r"^#define\s+(\w+)\s+(\d+)\s*$", raw, re.M)}
    text = re.sub(r"/\*.*?\*/", " ", raw, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = text.replace('extern "C" {', " ")
    return raw, text, defines


RAW, TEXT, DEFINES = _read_header()


def _functions():
    out = {}
    for m in re.finditer(r"([A-Za-z_][\w\s\*]*?)\b(zs_\w+)\s*\(([^;{}()]*)\)\s*;", TEXT):
        ret, name, args = m.group(1), m.group(2), m.group(3)
        params = [] if args.strip() in ("", "void") else [a.strip() for a in args.split(",")]
        out[name] = (" ".join(ret.split()), [re.sub(r"\s*\b\w+$", "", p) for p in params])
    return out


def _structs():
    out = {}
    for m in re.finditer(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", TEXT, re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            fm = re.fullmatch(r"(.+?)\s*\b(\w+)\s*(?:\[\s*(\w+)\s*\])?", decl)
            assert fm, f"cannot parse field {decl!r} of struct {m.group(1)}"
            n = fm.group(3)
            fields.append((fm.group(2), fm.group(1), int(DEFINES.get(n, n)) if n else None))
        out[m.group(1)] = fields
    return out


def _enums():
    out = {}
    for m in re.finditer(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", TEXT, re.S):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(-?\d+)", m.group(2))}
    return out


FUNCTIONS = _functions()
STRUCTS = _structs()
ENUMS = _enums()

SCALARS = {
    "void": None,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "unsigned long": ctypes.c_ulong,
    "long": ctypes.c_long,
    "size_t": ctypes.c_size_t,
}


def _same(actual, c_type, where):
    """Whether the ctypes type `actual` is the C type `c_type`."""
    t = " ".join(c_type.replace("const", " ").split())
    stars = t.count("*")
    base = t.replace("*", "").strip()
    if stars == 0:
        if base.startswith("enum "):
            assert base[5:] in ENUMS, f"{where}: unknown {base}"
            return actual in (ctypes.c_int, ctypes.c_uint)
        assert base in SCALARS, f"{where}: the test does not know the C type {base!r}"
        return actual is SCALARS[base]
    assert stars == 1, f"{where}: {c_type!r}"
    if base == "char":
        return actual is ctypes.c_char_p
    if base == "void":
        return actual is ctypes.c_void_p
    if base.startswith("struct "):
        tag = base[7:]
        if tag not in STRUCTS:  # opaque
            return actual is ctypes.c_void_p
        return (
            isinstance(actual, type)
            and issubclass(actual, ctypes._Pointer)
            and actual._type_ is getattr(zsmalloc, tag, None)
        )
    raise AssertionError(f"{where}: the test does not know the C type {c_type!r}")


def test_header_parsed():
    # The parser found what the header declares (guards the test itself).
    assert {"zs_create_pool", "zs_malloc", "zs_free", "zs_pool_check"} <= FUNCTIONS.keys()
    assert {"zs_pool_config", "zs_pool_info", "zs_class_info", "zs_pool_stats"} <= STRUCTS.keys()
    # Every name followed by "(" outside comments and macros is a declaration: none was
    # missed by the prototype parser.
    assert set(re.findall(r"\b(zs_\w+)\s*\(", TEXT)) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_has_a_prototype(name):
    ret, params = FUNCTIONS[name]
    assert name in zsmalloc.PROTOTYPES, f"{name} is declared in zsmalloc.h but not bound"
    fn = getattr(LIB, name, None)
    assert fn is not None, f"{name} is declared in zsmalloc.h but not exported by {zsmalloc.library_path}"
    assert fn.argtypes is not None, f"{name} has no argtypes"
    assert len(fn.argtypes) == len(params), f"{name}: {len(fn.argtypes)} argtypes for {params}"
    for i, (a, c) in enumerate(zip(fn.argtypes, params)):
        assert _same(a, c, f"{name} argument {i}"), f"{name} argument {i}: {a} is not {c}"
    assert _same(fn.restype, ret, f"{name} result"), f"{name} restype {fn.restype} is not {ret}"


def test_no_binding_without_declaration():
    assert sorted(set(zsmalloc.PROTOTYPES) - set(FUNCTIONS)) == []


@pytest.mark.parametrize("tag", sorted(STRUCTS))
def test_struct_layout(tag):
    cls = getattr(zsmalloc, tag, None)
    assert cls is not None and issubclass(cls, ctypes.Structure), f"struct {tag} has no ctypes class"
    assert [f[0] for f in cls._fields_] == [f[0] for f in STRUCTS[tag]], f"struct {tag}: field names or order"
    for (name, ctype), (_, c_type, n) in zip(cls._fields_, STRUCTS[tag]):
        if n is None:
            assert _same(ctype, c_type, f"{tag}.{name}"), f"{tag}.{name}: {ctype} is not {c_type}"
        else:
            assert issubclass(ctype, ctypes.Array) and ctype._length_ == n, f"{tag}.{name}: not {c_type}[{n}]"
            assert _same(ctype._type_, c_type, f"{tag}.{name}"), f"{tag}.{name}: elements are not {c_type}"


def test_every_config_field_is_a_keyword(make_pool):
    fields = [f[0] for f in STRUCTS["zs_pool_config"] if f[0] != "size"]
    assert [f[0] for f in zsmalloc._CONFIG_FIELDS] == fields
    for field, _, default, _ in zsmalloc._CONFIG_FIELDS:
        p = make_pool(**{field: default})
        assert p.config[field] == default


def test_constants():
    assert zsmalloc.MAX_ALLOC_SIZE == int(DEFINES["ZS_MAX_ALLOC_SIZE"])
    assert zsmalloc.ALLOC_NOGROW == int(DEFINES["ZS_ALLOC_NOGROW"])
    assert zsmalloc.NR_FULLNESS_GROUPS == int(DEFINES["ZS_NR_FULLNESS_GROUPS"])
    assert {"ZS_LAYOUT_" + k.upper(): v for k, v in zsmalloc.LAYOUTS.items()} == ENUMS["zs_layout"]
    assert {"ZS_MM_" + k.upper(): v for k, v in zsmalloc.MAP_MODES.items()} == ENUMS["zs_mapmode"]
    m = re.search(r'#define\s+ZSMALLOC_VERSION_STRING\s+"([^"]+)"', RAW)
    assert m and zsmalloc.__version__ == m.group(1), "the package version follows the library's"
