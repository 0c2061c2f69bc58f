"""pyxclib's XC sparse text format: a "rows cols" header, then one line of ``idx:value`` tokens per row.

Used for label matrices (trn_X_Y.txt) and sparse features alike. An empty line is an empty row;
indices are 0-based. Reading streams the file in blocks and parses each block with vectorised
numpy operations, so no Python object is made per non-zero.
"""

from __future__ import annotations

import gzip
import math
import re
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import scipy.sparse as sp

from lever_plugins.data._checks import check_csr, index_dtype, require_file
from lever_plugins.errors import DataError
from lever_plugins.runs import atomic_write

BLOCK_BYTES = 4 << 20  # bounds the per-block temporaries (about 20 bytes of numpy arrays per input byte)
WRITE_NNZ = 1 << 18  # non-zeros formatted per write chunk

_NL, _SP, _TAB, _CR, _COLON = 10, 32, 9, 13, 58
_COLON_TO_SPACE = bytes.maketrans(b":", b" ")
_FIX_TOKEN = "write each entry as idx:value, e.g. 17:1.0"
_TOKEN_RE = re.compile(rb"\d+:[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def shown_header(line: bytes) -> str:
    return line.decode("utf-8", "replace").strip()[:60]


def _parse_header(line: bytes, where: str) -> tuple[int, int]:
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        shown = line.decode("utf-8", "replace").strip()[:60]
        raise DataError(
            f"bad header {shown!r}: expected 'rows cols'",
            where=f"{where}:1",
            fix="the first line must hold the row and column counts",
        )
    # int() of thousands of digits is slow and, past 4300, refused by Python: length first.
    if max(len(p.lstrip(b"0")) for p in parts) > 13:
        raise DataError(f"implausible header {shown_header(line)!r}", where=f"{where}:1", fix="fix the header")
    rows, cols = int(parts[0]), int(parts[1])
    if max(rows, cols) >= 2**40:
        raise DataError(f"implausible header {rows} x {cols}", where=f"{where}:1", fix="fix the header")
    return rows, cols


class _Reader:
    """Accumulates the parsed blocks of one file."""

    def __init__(self, where: str, n_rows: int, n_cols: int, nonneg: bool):
        self.where = where
        self.n_rows = n_rows
        self.n_cols = n_cols
        self.nonneg = nonneg
        self.rows_seen = 0  # file rows parsed so far (line number = rows_seen + 2)
        self.idx_dtype = index_dtype(n_cols, 0)
        self.counts: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def fail(self, what: str, local_line: int, fix: str | None = None) -> None:
        line = self.rows_seen + local_line + 2
        raise DataError(what, where=f"{self.where}:{line}", fix=fix)

    def block(self, buf: bytes) -> None:
        """Parse ``buf``: whole lines, the last one ending in a newline."""
        b = np.frombuffer(buf, dtype=np.uint8)
        nl = np.flatnonzero(b == _NL)
        n_lines = nl.size
        # Token boundaries: every byte <= 32 (space, tab, CR, LF, ...) separates tokens.
        ws = (b <= _SP).view(np.int8)
        edges = np.flatnonzero(np.diff(ws)) + 1  # alternately token starts and token ends
        if ws[0] == 0:
            edges = np.concatenate(([0], edges))
        starts, ends = edges[0::2], edges[1::2]  # the buffer ends in '\n', so every token ends
        del ws, edges
        colons = np.flatnonzero(b == _COLON)
        ntok = starts.size
        # Structure: exactly one ':' per token, with characters on both sides.
        if colons.size != ntok or (ntok and not np.all((colons > starts) & (colons < ends - 1))):
            self._diagnose(buf)
        counts = np.diff(np.searchsorted(starts, nl), prepend=0).astype(np.int64)
        line_of = np.repeat(np.arange(n_lines), counts)  # 0-based line (within the block) of each token

        idx, ok_i = _parse_index(b, starts, colons, self.n_cols)
        plain, dots = _plain_tokens(b, starts, colons)
        if plain.all():
            val, ok_v = _parse_plain(b, colons + 1, ends, dots)
        else:  # the general parser only for the tokens that need it (exponents, signs, errors)
            val, ok_v = np.empty(ntok), np.empty(ntok, dtype=bool)
            p, q = np.flatnonzero(plain), np.flatnonzero(~plain)
            val[p], ok_v[p] = _parse_plain(b, colons[p] + 1, ends[p], dots[p])
            val[q], ok_v[q] = _parse_value(b, colons[q] + 1, ends[q])
        del b
        with np.errstate(over="ignore"):
            v32 = val.astype(np.float32)
        if not (ok_i.all() and ok_v.all() and np.isfinite(v32).all()) or (self.nonneg and (val < 0).any()):
            # Malformed, out of range, or numbers beyond the fast parser (nan/inf spellings, > 18
            # digits): find the first problem; a block with none is parsed by np.fromstring instead.
            self._diagnose(buf)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                nums = np.fromstring(buf.translate(_COLON_TO_SPACE), dtype=np.float64, sep=" ")
            if nums.size != 2 * ntok:
                self.fail("malformed line", 0, fix=_FIX_TOKEN)  # the two parsers disagree: be loud
            idx, val = nums[0::2].astype(np.int64), nums[1::2]
            v32 = val.astype(np.float32)

        # Rows past the header's count are allowed only as trailing blank lines.
        room = max(self.n_rows - self.rows_seen, 0)
        if n_lines > room:
            extra = np.flatnonzero(counts[room:])
            if extra.size:
                self.fail(
                    f"more rows than the header's {self.n_rows}",
                    int(extra[0]) + room,
                    fix="fix the header's row count or remove the extra lines",
                )
            counts = counts[:room]

        if ntok > 1:
            key = line_of * self.n_cols + idx
            if np.any(np.diff(key) <= 0):  # unsorted or repeated within a row: sort, then look for repeats
                order = np.argsort(key, kind="stable")
                dup = np.flatnonzero(np.diff(key[order]) == 0)
                if dup.size:
                    i = int(order[dup[0] + 1])
                    self.fail(
                        f"duplicate column {int(idx[i])} in one row",
                        int(line_of[i]),
                        fix="store each label at most once per row",
                    )
                idx = idx[order]
                v32 = v32[order]
        self.counts.append(counts)
        self.indices.append(idx.astype(self.idx_dtype))
        self.values.append(v32)
        self.rows_seen += n_lines

    def _diagnose(self, buf: bytes) -> None:
        """Slow path, only for a block that failed a vectorised check: raise on its first problem.

        Returns normally when the block is valid (it held numbers the fast parser does not take).
        """
        for i, line in enumerate(buf.split(b"\n")):
            for tok in line.split():
                if not _TOKEN_RE.fullmatch(tok):
                    shown = tok.decode("utf-8", "replace")[:40]
                    self.fail(f"malformed token {shown!r}", i, fix=_FIX_TOKEN)
                head, _, tail = tok.partition(b":")
                if len(head.lstrip(b"0")) > _MAX_DIGITS:  # before int(): Python refuses > 4300 digits
                    self.fail(
                        f"column index of {len(head)} digits out of range: the header says {self.n_cols} columns",
                        i, fix="indices are 0-based and must be < cols",
                    )  # fmt: skip
                j, v = int(head), float(tail)
                if j >= self.n_cols:
                    self.fail(
                        f"column index {j} out of range: the header says {self.n_cols} columns",
                        i,
                        fix="indices are 0-based and must be < cols",
                    )
                with np.errstate(over="ignore"):
                    finite32 = math.isfinite(np.float32(v))
                if not math.isfinite(v):
                    self.fail(f"non-finite value {tail.decode()} for column {j}", i, fix="use finite numbers")
                if not finite32:
                    self.fail(f"value {tail.decode()} for column {j} overflows float32", i)
                if self.nonneg and v < 0:
                    self.fail(f"negative value {v} for column {j}", i, fix="label values must be >= 0")
        if buf.count(b":") != len(buf.split()):
            self.fail("malformed line", 0, fix=_FIX_TOKEN)

    def matrix(self) -> sp.csr_matrix:
        if self.rows_seen < self.n_rows:
            raise DataError(
                f"the header says {self.n_rows} rows but the file has {self.rows_seen}",
                where=f"{self.where}:1",
                fix="fix the header or restore the missing lines; an empty row is an empty line",
            )
        counts = np.concatenate(self.counts) if self.counts else np.zeros(0, np.int64)
        nnz = int(counts.sum())
        dt = index_dtype(self.n_cols, nnz)
        indptr = np.zeros(self.n_rows + 1, dtype=dt)
        np.cumsum(counts, out=indptr[1 : counts.size + 1])
        indices = np.concatenate(self.indices).astype(dt, copy=False) if self.indices else np.zeros(0, dt)
        data = np.concatenate(self.values) if self.values else np.zeros(0, np.float32)
        self.indices = self.values = self.counts = []
        m = sp.csr_matrix((data, indices, indptr), shape=(self.n_rows, self.n_cols))
        m.has_sorted_indices = True
        return m


# Vectorised number parsing. Each token is cut into byte columns; a small state machine over the
# columns validates the syntax and accumulates the digits. Values use Clinger's fast path: an exact
# integer mantissa (< 2**53) times or divided by an exact power of ten (<= 1e22) is one correctly
# rounded operation, so the result equals strtod's. Anything else goes to the slow path.
_P10 = np.array([float(f"1e{k}") for k in range(23)])
_D, _DOT, _E, _PLUS, _MINUS, _OTHER, _PAD = range(7)
_CLS = np.full(256, _OTHER, dtype=np.int8)
_CLS[48:58] = _D
_CLS[ord(".")] = _DOT
_CLS[ord("e")] = _CLS[ord("E")] = _E
_CLS[ord("+")] = _PLUS
_CLS[ord("-")] = _MINUS
# states: 0 start, 1 sign, 2 int digits, 3 lone dot, 4 fraction, 5 'e', 6 exponent sign, 7 exponent digits, 8 bad
_S_SIGN, _S_INT, _S_FRAC, _S_EXPS, _S_EXPD, _BAD = 1, 2, 4, 6, 7, 8
_T = np.full((9, 7), _BAD, dtype=np.int8)
_T[:, _PAD] = np.arange(9)
_T[0, [_D, _DOT, _PLUS, _MINUS]] = [2, 3, 1, 1]
_T[1, [_D, _DOT]] = [2, 3]
_T[2, [_D, _DOT, _E]] = [2, 4, 5]
_T[3, _D] = 4
_T[4, [_D, _E]] = [4, 5]
_T[5, [_D, _PLUS, _MINUS]] = [7, 6, 6]
_T[6, _D] = 7
_T[7, _D] = 7
_ACCEPT = np.zeros(9, dtype=bool)
_ACCEPT[[_S_INT, _S_FRAC, _S_EXPD]] = True
_MAX_DIGITS = 18  # int64 holds any 18-digit integer


def _parse_index(b: np.ndarray, starts: np.ndarray, colons: np.ndarray, n_cols: int) -> tuple:
    """Integers between each token start and its colon; ``ok`` is False for non-digits or >= n_cols."""
    n = starts.size
    ilen = colons - starts
    idx = np.zeros(n, dtype=np.int64)
    ok = ilen <= _MAX_DIGITS
    if n == 0:
        return idx, ok
    scale = 1
    for k in range(1, min(int(ilen.max()), _MAX_DIGITS) + 1):  # from the last digit leftwards
        d = b[np.maximum(colons - k, 0)].astype(np.int64) - 48
        if k > ilen.min():
            act = ilen >= k
            d = np.where(act, d, 0)
        ok &= (d >= 0) & (d <= 9)
        idx += d * scale
        scale *= 10
    ok &= idx < n_cols
    return idx, ok


def _plain_tokens(b: np.ndarray, starts: np.ndarray, colons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which values are plain ``digits[.digits]`` (the usual case), and each token's '.' (-1: none).

    Looks only at the bytes that are not digits, a few per token, rather than at every byte.
    """
    odd = np.flatnonzero((b - np.uint8(48)) > 9)  # uint8 wraps, so this is "not a digit"
    ob = b[odd]
    keep = (ob > _SP) & (ob != _COLON)
    odd, ob = odd[keep], ob[keep]
    plain = np.ones(starts.size, dtype=bool)
    dots = np.full(starts.size, -1, dtype=np.int64)
    if odd.size == 0:
        return plain, dots
    tok = np.searchsorted(starts, odd, side="right") - 1
    dot = ob == ord(".")
    plain[tok[~dot]] = False  # signs, exponents, letters: the general parser
    plain[tok[dot & (odd < colons[tok])]] = False  # a dot in the index: malformed, let it fail there
    dtok = tok[dot]
    plain[dtok[1:][np.diff(dtok) == 0]] = False  # two dots
    dots[dtok] = odd[dot]
    return plain, dots


def _parse_plain(b: np.ndarray, vstart: np.ndarray, vend: np.ndarray, dots: np.ndarray) -> tuple:
    """``digits[.digits]`` values (see _plain_tokens); ``ok`` is False where the fast path does not apply."""
    n = vstart.size
    vlen = vend - vstart
    has_dot = dots >= 0
    ndig = vlen - has_dot
    nfrac = np.where(has_dot, vend - dots - 1, 0)
    ok = (ndig >= 1) & (ndig <= _MAX_DIGITS) & (nfrac <= 22)
    mant = np.zeros(n, dtype=np.int64)
    if n == 0:
        return mant.astype(np.float64), ok
    vmin, last = int(vlen.min()), b.size - 1
    for j in range(min(int(vlen.max()), _MAX_DIGITS + 1)):
        pos = vstart + j
        d = b[np.minimum(pos, last)].astype(np.int64) - 48
        skip = pos == dots
        if j >= vmin:
            skip |= j >= vlen
        mant = np.where(skip, mant, mant * 10 + d)
    ok &= mant < 2**53
    return mant / _P10[np.minimum(nfrac, 22)], ok


def _parse_value(b: np.ndarray, vstart: np.ndarray, vend: np.ndarray) -> tuple:
    """Decimal numbers in ``b[vstart:vend]``; ``ok`` is False where the fast path does not apply."""
    n = vstart.size
    vlen = vend - vstart
    val = np.zeros(n, dtype=np.float64)
    if n == 0:
        return val, np.ones(0, dtype=bool)
    width = min(int(vlen.max()), 2 * _MAX_DIGITS + 8)
    state = np.zeros(n, dtype=np.int8)
    mant = np.zeros(n, dtype=np.int64)
    ndig = np.zeros(n, dtype=np.int16)
    nfrac = np.zeros(n, dtype=np.int16)
    expo = np.zeros(n, dtype=np.int32)
    mneg = np.zeros(n, dtype=bool)
    eneg = np.zeros(n, dtype=bool)
    last = b.size - 1
    vmin = int(vlen.min())
    for j in range(width):
        c = b[np.minimum(vstart + j, last)]
        cls = _CLS[c]
        if j >= vmin:
            cls = np.where(vlen > j, cls, _PAD)  # past the token's end: keep its state
        new = _T[state, cls]
        digit = cls == _D
        mdig = digit & ((new == _S_INT) | (new == _S_FRAC))
        # int64 wraps past 18 digits, but such tokens are marked not ok below
        mant = np.where(mdig, mant * 10 + (c.astype(np.int64) - 48), mant)
        ndig += mdig
        nfrac += mdig & (new == _S_FRAC)
        edig = digit & (new == _S_EXPD)
        if edig.any():
            expo = np.where(edig, np.minimum(expo * 10 + (c.astype(np.int32) - 48), 100000), expo)
        minus = cls == _MINUS
        if minus.any():
            mneg |= minus & (new == _S_SIGN)
            eneg |= minus & (new == _S_EXPS)
        state = new
    e10 = np.where(eneg, -expo, expo) - nfrac
    ok = _ACCEPT[state] & (vlen <= width) & (ndig <= _MAX_DIGITS) & (mant < 2**53) & (np.abs(e10) <= 22)
    p = _P10[np.minimum(np.abs(e10), 22)]
    mf = mant.astype(np.float64)
    val = np.where(e10 >= 0, mf * p, mf / p)
    val = np.where(mneg, -val, val)
    return val, ok


def read_sparse(path: str | Path, *, n_cols: int | None = None, nonneg: bool = True) -> sp.csr_matrix:
    """Read an XC sparse text file (``.gz`` too) as CSR float32 with sorted indices.

    ``n_cols``: the expected column count; the header must agree. ``nonneg=False`` accepts negative
    values (score matrices). Raises DataError naming ``path:line`` on the first problem.
    """
    p = require_file(path)
    where = str(p)
    rd: _Reader | None = None
    try:
        with _open(p) as fh:
            header = fh.readline()
            if not header.strip():
                raise DataError("empty header line", where=f"{where}:1", fix="the first line must be 'rows cols'")
            n_rows, hdr_cols = _parse_header(header, where)
            if n_cols is not None and n_cols != hdr_cols:
                raise DataError(
                    f"the header says {hdr_cols} columns, expected {n_cols}",
                    where=f"{where}:1",
                    fix="the matrix does not belong to this data set",
                )
            rd = _Reader(where, n_rows, hdr_cols, nonneg)
            carry = b""
            while chunk := fh.read(BLOCK_BYTES):
                buf = carry + chunk if carry else chunk
                cut = buf.rfind(b"\n")
                if cut < 0:
                    carry = buf
                    continue
                carry = buf[cut + 1 :]
                rd.block(buf[: cut + 1])
            if carry:
                rd.block(carry + b"\n")  # last line without its newline
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        line = rd.rows_seen + 2 if rd is not None else 1  # the first line not completely read
        raise DataError(
            f"cannot read: {e} (after {line - 1} complete lines)",
            where=f"{where}:{line}",
            fix="the file is truncated or corrupt; fetch it again",
        ) from None
    assert rd is not None
    return rd.matrix()


_P10_INT = 10 ** np.arange(19, dtype=np.int64)
_MAX_FRAC = 12  # decimals tried for the fixed-point spelling; values needing more use numpy's repr


def _digit_columns(mat: np.ndarray, row: int, width: int, x: np.ndarray) -> None:
    """Write ``x`` (int64 >= 0) right-aligned into ``mat[row:row+width]``, leading zeros as NUL."""
    for c in range(width):
        p = _P10_INT[width - 1 - c]
        mat[row + c] = np.where((x >= p) | (c == width - 1), (x // p) % 10 + 48, 0)


def _shortest_fixed(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each float32 ``v``: the fewest decimals k (<= _MAX_FRAC) and integer m with m / 10**k == v.

    The check divides in float64 and rounds to float32, exactly what the reader does (Clinger's fast
    path, hence also what strtod gives), so the text reads back to the same float32. ``ok`` is False
    where no k works (tiny or huge values, negatives): those are spelled by numpy instead.
    """
    v64 = v.astype(np.float64)
    k = np.zeros(v.size, dtype=np.int64)
    m = np.zeros(v.size, dtype=np.int64)
    ok = np.zeros(v.size, dtype=bool)
    todo = np.flatnonzero(~np.signbit(v) & (v64 < 2.0**53))
    for kk in range(_MAX_FRAC + 1):
        if todo.size == 0:
            break
        p = _P10[kk]
        cand = np.rint(v64[todo] * p)
        good = (cand < 2.0**53) & ((cand / p).astype(np.float32) == v[todo])
        hit = todo[good]
        k[hit], m[hit], ok[hit] = kk, cand[good].astype(np.int64), True
        todo = todo[~good]
    return k, m, ok


def _format_chunk(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> bytes:
    """Bytes of the rows in ``indptr`` (local, starting at 0): 'i:v i:v\\n' per row, '\\n' if empty.

    Every token is laid out in fixed-width byte columns (index, ':', integer part, '.', decimals,
    numpy's spelling for the rare values that need it, separator) with unused bytes NUL; dropping
    the NULs leaves the text. Digits come from integer arithmetic, about 10x faster than astype("S").
    """
    n_rows = indptr.size - 1
    nnz = int(indptr[-1])
    if nnz == 0:
        return b"\n" * n_rows
    idx = indices.astype(np.int64)
    v = data.astype(np.float32)
    k, m, ok = _shortest_fixed(v)
    wi = len(str(int(idx.max())))
    whole = m // _P10_INT[k]
    frac = m - whole * _P10_INT[k]
    ww = len(str(int(whole.max())))
    wk = int(k.max())
    bad = np.flatnonzero(~ok)
    spelled = v[bad].astype("S") if bad.size else np.zeros(0, dtype="S1")
    wf = spelled.dtype.itemsize if bad.size else 0
    width = wi + 1 + ww + 1 + wk + wf + 1
    # Transposed (one row per byte column) so each column is written contiguously.
    mat = np.zeros((width, nnz), dtype=np.uint8)
    _digit_columns(mat, 0, wi, idx)
    mat[wi] = _COLON
    col = wi + 1
    _digit_columns(mat, col, ww, whole)
    col += ww
    mat[col] = np.where(k > 0, ord("."), 0)
    col += 1
    frac = frac * _P10_INT[wk - k]  # left-align to wk digits: one scalar power per column below
    for c in range(wk):  # exactly k decimals (zeros included), the rest NUL
        mat[col + c] = np.where(c < k, (frac // _P10_INT[wk - 1 - c]) % 10 + 48, 0)
    col += wk
    if bad.size:  # rebuild these tokens: index, ':', numpy's spelling
        sub = np.zeros((width, bad.size), dtype=np.uint8)
        _digit_columns(sub, 0, wi, idx[bad])
        sub[wi] = _COLON
        sub[col : col + wf] = spelled.view(np.uint8).reshape(bad.size, wf).T
        mat[:, bad] = sub
    col += wf
    counts = np.diff(indptr)
    sep = np.full(nnz, _SP, dtype=np.uint8)
    sep[indptr[1:][counts > 0] - 1] = _NL
    mat[col] = sep
    mat = np.ascontiguousarray(mat.T)
    keep = mat != 0
    out = mat[keep]  # row-major: the tokens in order, NUL padding gone
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        ends = np.cumsum(keep.sum(axis=1))
        before = indptr[empty]  # tokens written before each empty row
        pos = np.where(before > 0, ends[np.maximum(before - 1, 0)], 0)
        out = np.insert(out, pos, _NL)
    return out.tobytes()


def write_sparse(path: str | Path, m: sp.spmatrix, *, nonneg: bool = True) -> None:
    """Write ``m`` in XC sparse text format atomically (``.gz`` compresses); values round-trip as float32.

    The matrix is checked first (finite values, >= 0 unless ``nonneg=False``, no duplicate entries),
    so a bad matrix leaves nothing on disk.
    """
    p = Path(path)
    m = check_csr(m, where=f"matrix for {p}", nonneg=nonneg)
    n_rows, n_cols = m.shape
    indptr = m.indptr.astype(np.int64)
    with atomic_write(p, "wb") as raw:
        fh: IO[bytes] = gzip.GzipFile(filename=p.name, fileobj=raw, mode="wb", mtime=0) if p.suffix == ".gz" else raw
        fh.write(f"{n_rows} {n_cols}\n".encode())
        start = 0
        while start < n_rows:
            # As many rows as fit WRITE_NNZ non-zeros, at least one.
            stop = int(np.searchsorted(indptr, indptr[start] + WRITE_NNZ, side="right")) - 1
            stop = min(max(stop, start + 1), n_rows)
            lo, hi = indptr[start], indptr[stop]
            fh.write(_format_chunk(indptr[start : stop + 1] - lo, m.indices[lo:hi], m.data[lo:hi]))
            start = stop
        if fh is not raw:
            fh.close()


__all__ = ["read_sparse", "write_sparse"]
