#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Man pages from the documentation, at build time.

  mkman.py cli LIVESNAP VERSION OUT       livesnap(1), from the command's
                                          own help (`livesnap help CMD`)
  mkman.py api VERSION OUTDIR MD...       liblivesnap(3) and one page per
                                          function group of the API docs
  mkman.py list MD...                     the names of the api pages

A function group is a section of docs/api.md or docs/format.md whose
```c block declares ls_* functions: its page is named after the first,
and every other one gets a page that sources it (.so), so `man 3 NAME`
finds each function of the API.
"""
import re
import subprocess
import sys

DATE = "livesnap"  # no date: the pages are the same on every build


def esc(text):
    """Plain text for roff: backslashes, and a leading dot or quote."""
    text = text.replace("\\", "\\e")
    # ASCII out: groff reads bytes (other characters as \[uXXXX])
    text = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c)
                   for c in text)
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def inline(text):
    """Markdown inline markup to roff fonts."""
    text = esc(text)
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", text)
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\\fI\1\\fR",
                  text)
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def md_to_roff(md):
    """Paragraphs, lists, tables and code blocks of a markdown section."""
    md = re.sub(r"<!--.*?-->\n?", "", md, flags=re.S)
    out, para = [], []
    lines = md.strip("\n").split("\n")

    def flush():
        if para:
            out.append(".PP")
            out.append(inline(" ".join(para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            out += [".PP", ".nf", ".RS 4"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(esc(lines[i]) or "\\&")
                i += 1
            out += [".RE", ".fi"]
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            i -= 1
            head, rows = rows[0], rows[1:]
            out.append(".PP")
            out.append(inline(" \u2014 ".join(head)) + ":")
            for r in rows:
                out += [".TP", inline(r[0]), inline("; ".join(r[1:]))]
        elif re.match(r"[*-] ", line):
            flush()
            item = [line[2:]]
            while (i + 1 < len(lines) and lines[i + 1].startswith("  ")
                   and lines[i + 1].strip()):
                i += 1
                item.append(lines[i].strip())
            out += [".IP \\(bu 2", inline(" ".join(item))]
        elif line.strip() in ("", "---"):
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


def sections(md):
    """(title, body) of every ## and ### section."""
    parts = re.split(r"^(#{2,3}) (.*)$", md, flags=re.M)
    return [(parts[i + 1], parts[i + 2]) for i in range(1, len(parts), 3)]


def functions(body):
    names = []
    for block in re.findall(r"```c\n(.*?)```", body, re.S):
        for n in re.findall(r"\b(ls_[a-z0-9_]+)\s*\(", block):
            if n not in names:
                names.append(n)
    return names


def groups(mds):
    out = []
    for md in mds:
        text = open(md).read()
        for title, body in sections(text):
            fns = functions(body)
            if fns:
                out.append((title, fns, body))
    return out


def header(name, section, version, title):
    return (f'.TH {name.upper()} {section} "" "livesnap {version}" '
            f'"{title}"\n')


def summary_of(title, prose):
    """A NAME line: the section's <!-- man: ... --> line, its topic, or
    its first clause."""
    m = re.search(r"<!-- man: (.*?) -->", prose)
    if m:
        return m.group(1)
    if ":" in title:
        return title.split(":")[0].lower()
    first = re.split(r"[.;:(]\s|, |\n\n", prose.strip(), maxsplit=1)[0]
    first = re.sub(r"[`*]", "", " ".join(first.split()))
    return first[:1].lower() + first[1:] if first else "liblivesnap"


def group_page(title, fns, body, version):
    prose0 = re.sub(r"```c\n.*?```\n?", "", body, count=1, flags=re.S)
    summary = summary_of(title, prose0)
    text = header(fns[0], 3, version, "liblivesnap")
    text += ".SH NAME\n" + esc(", ".join(fns)) + " \\- " + esc(summary)
    text += "\n.SH SYNOPSIS\n.nf\n.B #include <livesnap.h>\n.PP\n"
    block = "\n".join(re.findall(r"```c\n(.*?)```", body, re.S))
    text += esc(block.rstrip("\n")) + "\n.fi\n.PP\nLink with "
    text += "\\fIpkg-config --cflags --libs livesnap\\fR.\n"
    prose = re.sub(r"```c\n.*?```\n?", "", body, count=1, flags=re.S)
    text += ".SH DESCRIPTION\n" + md_to_roff(prose) + "\n"
    text += ".SH SEE ALSO\n.BR liblivesnap (3),\n.BR livesnap (1)\n"
    return text


def overview_page(mds, gs, version):
    api = open(mds[0]).read()
    intro = api.split("\n## ", 1)[0].split("\n", 1)[1]
    threads = dict((t, b) for t, b in sections(api)).get(
        "Errors and threads", "")
    text = header("liblivesnap", 3, version, "liblivesnap")
    text += (".SH NAME\nliblivesnap \\- live point-in-time snapshots of "
             "a process's memory (userfaultfd write-protect)\n"
             ".SH SYNOPSIS\n.nf\n.B #include <livesnap.h>\n.PP\n"
             "cc app.c $(pkg-config --cflags --libs livesnap)\n"
             "cc app.c $(pkg-config --static --cflags --libs livesnap)\n"
             ".fi\n.SH DESCRIPTION\n")
    text += md_to_roff(intro) + "\n"
    text += ".SH ERRORS AND THREADS\n" + md_to_roff(threads) + "\n"
    text += ".SH FUNCTIONS\n"
    for title, fns, _ in gs:
        text += ".TP\n.BR " + fns[0] + " (3)\n" + esc(", ".join(fns)) + "\n"
    text += (".SH SEE ALSO\n.BR livesnap (1);\n"
             "the snapshot format and the design notes: docs/format.md, "
             "docs/engine.md in the sources\n")
    return text


def api(version, outdir, mds):
    gs = groups(mds)
    pages = {"liblivesnap.3": overview_page(mds, gs, version)}
    for title, fns, body in gs:
        pages[fns[0] + ".3"] = group_page(title, fns, body, version)
        for f in fns[1:]:
            pages[f + ".3"] = f".so man3/{fns[0]}.3\n"
    for name, text in pages.items():
        with open(f"{outdir}/{name}", "w") as f:
            f.write(text)


def page_names(mds):
    names = ["liblivesnap.3"]
    for _, fns, _ in groups(mds):
        names += [f + ".3" for f in fns]
    return names


# ---------------------------------------------------------------- livesnap(1)

def help_of(livesnap, *cmd):
    return subprocess.run([livesnap, "help", *cmd], check=True,
                          capture_output=True, text=True).stdout


def blocks(text):
    """Splits a help into its parts: usage, description, named sections."""
    parts = {"": []}
    key = ""
    for line in text.split("\n"):
        m = re.fullmatch(r"([A-Z][A-Za-z ]+):", line)
        if m:
            key = m.group(1)
            parts[key] = []
        else:
            parts[key].append(line)
    return parts


def tagged(lines, tag_re, cont_indent):
    """.TP entries of "  TAG  text" lines and their indented continuations."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        if line.startswith(" " * cont_indent):
            out.append(esc(line.strip()))
            continue
        m = re.match(tag_re, line)
        if not m:
            out.append(esc(line.strip()))
            continue
        out += [".TP", "\\fB" + esc(m.group(1)).replace("-", "\\-") +
                "\\fR"]
        if m.group(2):
            out.append(esc(m.group(2)))
    return "\n".join(out)


def paragraphs(lines):
    text = "\n".join(lines).strip("\n")
    return "\n".join(".PP\n" + esc(" ".join(p.split("\n")))
                     for p in re.split(r"\n\s*\n", text) if p.strip())


def command_section(livesnap, name):
    b = blocks(help_of(livesnap, name))
    head = b[""]
    usage = head[0][len("usage: "):]
    text = f".SS {esc(usage)}\n" + paragraphs(head[1:]) + "\n"
    if b.get("Options"):
        text += ".PP\nOptions:\n.RS 4\n"
        text += tagged(b["Options"], r"^  \s*(-\S.*?)(?:\s{2,}(\S.*))?$",
                       28) + "\n.RE\n"
    if b.get("Exit status"):
        text += ".PP\nExit status:\n.RS 4\n"
        text += tagged(b["Exit status"], r"^  (\d[\d, ]*?)  +(\S.*)$",
                       5) + "\n.RE\n"
    return text


def cli(livesnap, version, out):
    top = blocks(help_of(livesnap))
    usage = [l.strip() for l in top[""] if l.strip()]
    synopsis = [l[len("usage: "):] if l.startswith("usage: ") else l
                for l in usage if l.startswith(("usage:", "livesnap"))]
    tagline = [l for l in usage if not l.startswith(("usage:", "livesnap"))]
    cmds = [re.match(r"\s+(\S+)\s+(.*)", l).groups()
            for l in top["Commands"] if l.startswith("  ")]
    after = [l for l in top["Commands"] if not l.startswith("  ")]
    text = header("livesnap", 1, version, "User Commands")
    text += (".SH NAME\nlivesnap \\- " +
             esc(tagline[0][:1].lower() + tagline[0][1:].rstrip(".") if tagline else "") + "\n")
    text += ".SH SYNOPSIS\n.nf\n" + "\n".join(esc(s) for s in synopsis)
    text += "\n.fi\n.SH DESCRIPTION\n" + paragraphs(tagline + [""] + after)
    text += "\n.PP\nCommands:\n.RS 4\n"
    for name, summary in cmds:
        text += f".TP\n.B {name}\n{esc(summary)}\n"
    text += ".RE\n.SH COMMANDS\n"
    for name, _ in cmds:
        if name != "help":
            text += command_section(livesnap, name)
    text += ".SH EXIT STATUS\n" + tagged(top.get("Exit status", []),
                                         r"^  (\d+)  +(\S.*)$", 5)
    text += "\n.SH SEE ALSO\n.BR liblivesnap (3)\n"
    with open(out, "w") as f:
        f.write(text)


def main(argv):
    if argv[1] == "cli":
        cli(*argv[2:5])
    elif argv[1] == "api":
        api(argv[2], argv[3], argv[4:])
    elif argv[1] == "list":
        print("\n".join(page_names(argv[2:])))
    else:
        sys.exit(f"mkman.py: unknown mode '{argv[1]}'")


if __name__ == "__main__":
    main(sys.argv)
