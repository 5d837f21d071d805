#!/usr/bin/env python3
"""Instruction mix of lowbit's hot NEON kernels (issue 10): proof, without
aarch64 hardware, that the neon64 kernel table runs SIMD code and not the
scalar fallback. Reads `objdump -drC` of the neon64 kernel object and prints,
per hot kernel: instructions, NEON vector instructions (operands v<n>.<T> or
q<n>), calls left in the body, and the most frequent vector opcodes. Exits 1
if a hot kernel is missing or has no vector instruction."""
import collections
import re
import sys

HOT = {  # what each kernel is: the name pattern of its function
    "int4 GEMV, fp32 activations": r"group_rows_for<lowbit::simd::neon64_tag, 4, 1, false>\(",
    "int4 GEMV, int8 activations": r"group_rows_for<lowbit::simd::neon64_tag, 4, 1, true>\(",
    "int2 GEMV, fp32 activations": r"group_rows_for<lowbit::simd::neon64_tag, 2, 1, false>\(",
    "int3 GEMM, 4 columns": r"group_rows_for<lowbit::simd::neon64_tag, 3, 4, false>\(",
    "SpQR 3-bit row, fp32 activations": r"spqr_row<lowbit::simd::neon64_tag, 3, float>\(",
    # tile decode, scores and value sums, all inlined into heads<4> (x86 too)
    "KIVI attention, 4 heads": r"Attend<lowbit::simd::neon64_tag>::heads<4>\(",
    "VQ gather-FMA (v8)": r"vq_simd<lowbit::simd::neon64_tag, 8, 1ul, true>\(",
    "VQ LUT build": r"lut_build<lowbit::simd::neon64_tag>\(",
    "bf16 dot": r"bf16_dot_loop<lowbit::simd::neon64_tag, lowbit::detail::bf16_dot<",
    "DFloat11 split bf16 dot": r"bf16_dot_loop<lowbit::simd::neon64_tag, lowbit::detail::split_bf16_dot<",
}

def functions(text):
    name, body = None, []
    for line in text.splitlines():
        m = re.match(r"[0-9a-f]+ <(.*)>:$", line)
        if m:
            if name: yield name, body
            name, body = m.group(1), []
        elif name and "\t" in line:
            body.append(line)
    if name: yield name, body

def mix(body):
    n = vec = calls = 0
    ops = collections.Counter()
    for line in body:
        if "R_AARCH64" in line: continue
        f = line.split("\t")
        if len(f) < 2: continue
        op, args = f[1].strip(), " ".join(f[2:])
        n += 1
        if op in ("bl", "blr"): calls += 1
        if re.search(r"\bv\d+\.|\bq\d+\b", args):
            vec += 1
            ops[op] += 1
    return n, vec, calls, ops

funcs = list(functions(open(sys.argv[1]).read()))
ok = True
print(f"{'kernel':30} {'instr':>6} {'NEON':>6} {'share':>6} {'calls':>5}  top NEON opcodes")
for what, pat in HOT.items():
    found = [(nm, b) for nm, b in funcs if re.search(pat, nm)]
    if not found:
        print(f"{what:30} MISSING ({pat})"); ok = False; continue
    n, vec, calls, ops = mix(max(found, key=lambda f: len(f[1]))[1])
    top = ", ".join(f"{k} {v}" for k, v in ops.most_common(6))
    print(f"{what:30} {n:6d} {vec:6d} {vec / max(n, 1):6.0%} {calls:5d}  {top}")
    ok &= vec > 0
sys.exit(0 if ok else 1)
