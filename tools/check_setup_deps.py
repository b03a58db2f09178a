#!/usr/bin/python3
"""Proves that setup.sh installs everything the build and the Python references read.

A green CI on a machine that earlier sessions used says nothing about a fresh one: a package
installed there by hand keeps the build working. This check lists every file the build read
and every module the tests and benchmarks import, maps each to its Debian package, and fails,
naming package and file, when a package is neither in setup.sh's list nor a (recursive,
Depends-only) dependency of one.

  tools/check_setup_deps.py [--build-dir build] [--omit PKG ...]

What it reads:
  - CMake inputs: the dependencies of build.ninja's RERUN_CMAKE edge (package configs, find
    modules, CMake's own modules);
  - header dependencies of every object (`ninja -t deps`);
  - libraries on the link lines (full paths and -l names) and what each executable loads
    (`ldd`);
  - the modules that every Python file under tests/, bench/, tools/ and python/ imports, resolved with
    /usr/bin/python3 (the interpreter the tests run).
--omit drops packages from setup.sh's list (to show the check failing; see the test).
Exit 0 when complete, 1 with one line per missing package otherwise, 2 on a usage error.
"""
import argparse
import ast
import os
import re
import subprocess
import sys

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def setup_packages():
    out = run(["bash", os.path.join(SOURCE, "setup.sh"), "--list-packages"])
    return set(out.split())


def dependency_closure(packages):
    """Every package that installing `packages` installs: Depends and Pre-Depends, recursively,
    both sides of an alternative (apt may take either)."""
    out = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
               "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *sorted(packages)])
    closure = set()
    for line in out.splitlines():
        m = re.match(r"^\s*\|?(?:Pre)?Depends:\s*<?([^\s>]+)>?", line) or re.match(r"^(\S+)$", line)
        if m:
            closure.add(m.group(1).split(":")[0])
    # apt-cache names the providers of a virtual package on indented lines without a tag.
    for line in out.splitlines():
        m = re.match(r"^\s{4}(\S+)$", line)
        if m:
            closure.add(m.group(1).split(":")[0])
    return closure


def ninja_lines(build, *args):
    return run(["ninja", "-C", build, "-t", *args]).splitlines()


def build_inputs(build):
    files = {}  # path -> why it was read
    text = open(os.path.join(build, "build.ninja")).read().replace("$\n", " ")
    m = re.search(r"^build build\.ninja[^:]*: RERUN_CMAKE [^|]*\|(.*)$", text, re.M)
    if not m:
        sys.exit("check_setup_deps: no RERUN_CMAKE edge in %s/build.ninja" % build)
    for f in m.group(1).split():
        files.setdefault(f, "CMake input")
    target = None
    for line in ninja_lines(build, "deps"):
        if line and not line.startswith(" "):
            target = line.split(":")[0]
        elif line.strip():
            files.setdefault(line.strip(), "header of " + target)
    link_names = set()
    for m in re.finditer(r"^\s*LINK_LIBRARIES = (.*)$", text, re.M):
        for word in m.group(1).split():
            if word.startswith("-l"):
                link_names.add(word[2:])
            elif word.startswith("/"):
                files.setdefault(word, "linked")
    for name in sorted(link_names):
        path = run(["g++", "-print-file-name=lib%s.so" % name]).strip()
        if os.path.isabs(path):
            files.setdefault(path, "linked (-l%s)" % name)
    for exe in ninja_lines(build, "targets", "all"):
        out = exe.split(":")[0]
        path = os.path.join(build, out)
        if os.path.isfile(path) and os.access(path, os.X_OK) and not out.endswith((".a", ".o")):
            for lib in re.findall(r"=> (/\S+)", run(["ldd", path])):
                files.setdefault(lib, "loaded by " + out)
    return files


def python_imports():
    """Top-level modules imported by the project's Python files, with one importing file each."""
    modules = {}
    # The project's own modules: every script's name, and the packages of python/ (the vitq module).
    local = set(n for n in os.listdir(os.path.join(SOURCE, "python"))
                if os.path.isdir(os.path.join(SOURCE, "python", n)))
    tops = ("tests", "bench", "tools", "python")
    for top in tops:
        for root, _, names in os.walk(os.path.join(SOURCE, top)):
            if "node_modules" in root:
                continue
            for n in names:
                if n.endswith(".py"):
                    local.add(n[:-3])
    for top in tops:
        for root, _, names in os.walk(os.path.join(SOURCE, top)):
            if "node_modules" in root:
                continue
            for n in sorted(names):
                if not n.endswith(".py"):
                    continue
                path = os.path.join(root, n)
                for node in ast.walk(ast.parse(open(path).read(), path)):
                    if isinstance(node, ast.Import):
                        names_ = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names_ = [node.module]
                    else:
                        continue
                    for name in names_:
                        top_name = name.split(".")[0]
                        if top_name not in local:
                            modules.setdefault(top_name, os.path.relpath(path, SOURCE))
    return modules


def module_files(modules):
    """Resolves modules with the tests' interpreter; returns (path -> why, unresolved)."""
    probe = ("import importlib.util, json, sys\n"
             "out = {}\n"
             "for m in sys.argv[1:]:\n"
             "    try: s = importlib.util.find_spec(m)\n"
             "    except Exception: s = None\n"
             "    out[m] = None if s is None else (s.origin or (list(s.submodule_search_locations or [''])[0]))\n"
             "print(json.dumps(out))\n")
    if not os.access(PYTHON, os.X_OK):
        return {}, {m: why for m, why in modules.items()}
    import json
    found = json.loads(run([PYTHON, "-c", probe, *sorted(modules)]))
    files, missing = {}, {}
    for m, origin in found.items():
        if origin is None:
            missing[m] = modules[m]
        elif origin not in ("built-in", "frozen"):
            files[origin] = "python module %s (imported by %s)" % (m, modules[m])
    return files, missing


def owners(paths):
    """Debian package of each path (dpkg's file lists; /lib and /usr/lib are the same tree)."""
    by_path = {}
    info = "/var/lib/dpkg/info"
    for n in os.listdir(info):
        if n.endswith(".list"):
            pkg = n[:-5].split(":")[0]
            for line in open(os.path.join(info, n), errors="replace"):
                by_path[line.rstrip("\n")] = pkg
    result = {}
    for p in paths:
        candidates = [p, os.path.realpath(p)]
        candidates += [c.replace("/usr/lib/", "/lib/", 1) for c in candidates if c.startswith("/usr/lib/")]
        candidates += [c.replace("/lib/", "/usr/lib/", 1) for c in candidates if c.startswith("/lib/")]
        result[p] = next((by_path[c] for c in candidates if c in by_path), None)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--omit", nargs="*", default=[], help="drop these packages from setup.sh's list")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.build_dir, "build.ninja")):
        print("check_setup_deps: %s/build.ninja not found; build first (./setup.sh)" % args.build_dir,
              file=sys.stderr)
        return 2
    listed = setup_packages() - set(args.omit)
    allowed = dependency_closure(listed)

    files = build_inputs(args.build_dir)
    mod_files, unresolved = module_files(python_imports())
    files.update(mod_files)
    build = os.path.realpath(args.build_dir)
    problems = []
    for m, user in sorted(unresolved.items()):
        problems.append("python module %s (imported by %s) is not importable by %s" % (m, user, PYTHON))
    system = {}
    for f, why in files.items():
        path = f if os.path.isabs(f) else os.path.join(args.build_dir, f)
        real = os.path.realpath(path)
        if real.startswith((SOURCE + os.sep, build + os.sep)):
            continue
        if not real.startswith(("/usr/", "/lib/", "/lib64/")) or real.startswith("/usr/local/"):
            problems.append("%s (%s) is outside every Debian package" % (path, why))
            continue
        system[path] = why
    owner = owners(system)
    missing = {}
    for path, pkg in sorted(owner.items()):
        if pkg is None:
            problems.append("%s (%s) belongs to no installed Debian package" % (path, system[path]))
        elif pkg not in allowed:
            missing.setdefault(pkg, (path, system[path]))
    for pkg, (path, why) in sorted(missing.items()):
        problems.append("package %s is needed but setup.sh neither lists it nor depends on it: "
                        "%s (%s)" % (pkg, path, why))
    if problems:
        for p in problems:
            print("check_setup_deps: " + p, file=sys.stderr)
        print("check_setup_deps: FAILED: %d problem(s); add the packages to setup.sh's PACKAGES" %
              len(problems), file=sys.stderr)
        return 1
    print("check_setup_deps: ok: %d files from %d packages, all installed by setup.sh (%d listed)"
          % (len(system), len(set(owner.values())), len(listed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
