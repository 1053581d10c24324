"""Registers, spills and instruction mix of the CCE Pallas kernels, read from their PTX (GPU only).

Compiles each kernel of ``benchmark_cce_parts`` for N x V x D (shapes only: nothing is run or
allocated) with XLA's dump on, assembles every dumped PTX with ``ptxas -v`` for the device's
architecture and prints, per CCE kernel: registers per thread, spill bytes, the programs per SM the
registers allow, and the SASS instruction counts of the kernel (MUFU.EX2, HGMMA, FFMA, FADD, ...)
when ``cuobjdump`` is present. Tells whether programs on one SM could overlap each other's phases.

  python -m experiments.kernel_resources --d 64 128 256
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

SASS_OPS = ("MUFU.EX2", "HGMMA", "HMMA", "FFMA", "FADD", "FMUL", "FSEL", "FSETP", "LDGSTS",
            "LDSM", "BAR", "SYNCS", "WARPGROUP")


def find_tool(name: str) -> str | None:
    """``name`` on PATH or in the pip-installed nvidia packages jax uses."""
    found = shutil.which(name)
    if found:
        return found
    for base in sys.path:
        hits = glob.glob(os.path.join(base, "nvidia", "**", "bin", name), recursive=True)
        if hits:
            return hits[0]
    return None


def compile_parts(dump_dir: str, n: int, v: int, ds: list[int], variants: dict):
    import jax
    import jax.numpy as jnp

    from experiments.benchmark_cce_parts import parts

    for d in ds:
        e = jax.ShapeDtypeStruct((n, d), jnp.bfloat16)
        c = jax.ShapeDtypeStruct((v, d), jnp.bfloat16)
        t = jax.ShapeDtypeStruct((n,), jnp.int32)
        for name, cfg in variants.items():
            for part, fn in parts(e, c, t, cfg, False).items():
                if part != "de_and_dc_kernels":
                    jax.jit(fn).lower(e, c, t).compile()
                    print(f"compiled d={d} {name} {part}", flush=True)
    return jax.devices()[0].compute_capability


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--v", type=int, default=1_000_000)
    p.add_argument("--d", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--variants", default='{"default": {}}')
    p.add_argument("--sass-out", default=None, help="also write the kernels' SASS here")
    args = p.parse_args(argv)
    dump = tempfile.mkdtemp(prefix="cce_dump_")
    # Before jax is imported: XLA reads its flags once.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}"
                               " --xla_dump_hlo_as_text").strip()
    from experiments.benchmark_loss import parse_variants

    cc = compile_parts(dump, args.n, args.v, args.d, parse_variants(args.variants))
    arch = "sm_" + cc.replace(".", "") + ("a" if cc == "9.0" else "")
    ptxas, cuobjdump = find_tool("ptxas"), find_tool("cuobjdump")
    print(f"arch {arch}; ptxas {ptxas}; cuobjdump {cuobjdump}")
    ptx_files = sorted(glob.glob(os.path.join(dump, "*.ptx")))
    print(f"{len(ptx_files)} PTX files in {dump};", collections.Counter(
        os.path.basename(f).split(".")[-1] for f in glob.glob(os.path.join(dump, "*"))))
    if ptxas is None:
        raise SystemExit("no ptxas found: install nvidia-cuda-nvcc or put ptxas on PATH")
    sass_log = []
    for f in ptx_files:
        text = open(f).read()
        if "cce_" not in text:
            continue
        cubin = f[:-4] + ".cubin"
        r = subprocess.run([ptxas, "-v", f"-arch={arch}", f, "-o", cubin],
                           capture_output=True, text=True)
        entry = None
        for line in r.stderr.splitlines():
            m = re.search(r"Compiling entry function '([^']+)'", line)
            if m:
                entry = m.group(1)
            if entry and "cce_" in entry and ("registers" in line or "spill" in line):
                regs = re.search(r"Used (\d+) registers", line)
                msg = line.strip()
                if regs:
                    per_cta = int(regs.group(1))
                    msg += f"  -> programs/SM by registers at 4 warps: {65536 // (per_cta * 128)}"
                    msg += f", at 8 warps: {65536 // (per_cta * 256)}"
                print(f"{os.path.basename(f)} {entry}: {msg}")
        if r.returncode:
            print(f"ptxas failed on {f}: {r.stderr[-500:]}")
            continue
        if cuobjdump:
            sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True,
                                  text=True).stdout
            for func in re.split(r"\n\s*Function : ", sass)[1:]:
                fname = func.split("\n", 1)[0].strip()
                if "cce_" not in fname:
                    continue
                ops = collections.Counter()
                for line in func.splitlines():
                    m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
                    if m:
                        op = m.group(1)
                        key = next((k for k in SASS_OPS if op.startswith(k)), None)
                        ops[key or op.split(".")[0]] += 1
                top = ", ".join(f"{k} {c}" for k, c in ops.most_common(14))
                print(f"SASS {fname}: {sum(ops.values())} instructions: {top}")
                sass_log.append(f"==== {os.path.basename(f)} {fname}\n{func}")
    if args.sass_out and sass_log:
        with open(args.sass_out, "w") as fh:
            fh.write("\n".join(sass_log))


if __name__ == "__main__":
    main()
