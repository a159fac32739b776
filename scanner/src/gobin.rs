//! Go binaries: the module build information the Go linker stamps into
//! every executable it links (Go 1.13 on), read from an ELF file as it
//! streams out of a layer's tar, without holding the file in memory.
//!
//! Format facts (from the Go toolchain's documentation of the format):
//! a 32-byte header at the start of the `.go.buildinfo` section, 16-byte
//! aligned in the file, beginning with the 14-byte magic `\xff Go
//! buildinf:`, then the pointer size (byte 14) and a flags byte (15: bit 0
//! big-endian, bit 1 "strings inline"). Since Go 1.18 (flag bit 1) the
//! header is followed by two strings, each a uvarint length and its bytes:
//! the toolchain version (`go1.21.5`, possibly followed by ` X:exp`) and
//! the module information. Before 1.18 the header holds two pointers to
//! Go string headers in the data segment; that layout needs the program
//! headers to follow and is reported as unsupported, not read.
//!
//! The module information, when not empty, is wrapped in 16 sentinel
//! bytes at each end; inside, one record per line, tab-separated:
//! `path <main package>`, `mod <path> <version> [<sum>]` (the main
//! module), `dep <path> <version> [<sum>]`, `=> <path> <version> [<sum>]`
//! (the module just named is replaced by this one, which is what is
//! built) and `build <key>=<value>` settings.
//!
//! Locating the header in a stream: the section header table's offset is
//! in the ELF header, which arrives first, so the table (and the bytes
//! just before it, where linkers put `.shstrtab`) can be captured as they
//! pass. Every 16-aligned occurrence of the magic is kept as a candidate
//! (a few, each with a bounded tail). At the end the candidate at the
//! start of the section named `.go.buildinfo` is used; without usable
//! section headers (stripped, or `.shstrtab` elsewhere) the first
//! candidate that parses as a well-formed header is.

use std::io::Read;

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Bytes kept after each candidate: header, version and module info. A
/// large program's module info (a few hundred deps) is tens of KiB.
const CANDIDATE_BYTES: usize = 1 << 20;
const MAX_CANDIDATES: usize = 8;
/// Bytes before the section header table kept for `.shstrtab`.
const BEFORE_SHDRS: u64 = 64 << 10;
const MAX_SHDR_BYTES: u64 = 1 << 20;

/// What one ELF file says about Go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoFind {
    /// No Go build information (a C program, a shared library, ...).
    NotGo,
    Found(BuildInfo),
    /// Build information present but not read; the reason says why.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// As stamped, e.g. `go1.19.8` (experiments after a space dropped).
    pub go_version: String,
    /// The `path` line: the main package's import path.
    pub path: String,
    /// The main module, when the build knew one.
    pub main: Option<Module>,
    pub deps: Vec<Module>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Module {
    pub path: String,
    pub version: String,
    pub sum: String,
    /// The `=>` line following this module, if any.
    pub replace: Option<Box<Module>>,
}

impl Module {
    /// The module actually built: the replacement when there is one.
    pub fn built(&self) -> &Module {
        self.replace.as_deref().unwrap_or(self)
    }
}

/// Whether the first bytes of a file are an ELF header.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// The toolchain's version in the form OSV's Go ecosystem gives the
/// `stdlib` package: `go1.19.8` is `1.19.8`, `go1.21` is `1.21.0`,
/// `go1.21rc2` is `1.21.0-rc.2`. None for development toolchains
/// (`devel ...`) and vendor builds that do not follow the scheme.
pub fn stdlib_version(go_version: &str) -> Option<String> {
    let v = go_version.split_whitespace().next()?.strip_prefix("go")?;
    let (release, pre) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let mut nums: Vec<&str> = release.split('.').collect();
    if nums.len() < 2 || nums.len() > 3 || nums.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if nums.len() == 2 {
        nums.push("0");
    }
    let mut out = nums.join(".");
    if let Some(pre) = pre {
        let word_end = pre.find(|c: char| c.is_ascii_digit())?;
        let (word, n) = pre.split_at(word_end);
        if !matches!(word, "rc" | "beta") || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out = format!("{out}-{word}.{n}");
    }
    Some(out)
}

impl BuildInfo {
    /// The modules this binary was built from, as (name, version): the
    /// toolchain as `stdlib`, the main module unless it is `(devel)`, and
    /// every dependency (its replacement when replaced; local-directory
    /// replacements, which have no version, are left out).
    pub fn modules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(v) = stdlib_version(&self.go_version) {
            out.push(("stdlib".to_string(), v));
        }
        for m in self.main.iter().chain(&self.deps) {
            let b = m.built();
            if b.version.is_empty() || b.version == "(devel)" {
                continue;
            }
            out.push((b.path.clone(), b.version.clone()));
        }
        out
    }
}

/// Parses the module information text (sentinels already removed or not).
pub fn parse_modinfo(go_version: &str, text: &str) -> BuildInfo {
    let mut info = BuildInfo { go_version: go_version.split_whitespace().next().unwrap_or_default().to_string(), ..Default::default() };
    // Which module a following `=>` line replaces.
    enum Last {
        None,
        Main,
        Dep,
    }
    let mut last = Last::None;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let module = || Module {
            path: f.get(1).copied().unwrap_or_default().to_string(),
            version: f.get(2).copied().unwrap_or_default().to_string(),
            sum: f.get(3).copied().unwrap_or_default().to_string(),
            replace: None,
        };
        match f[0] {
            "path" => info.path = f.get(1).copied().unwrap_or_default().to_string(),
            "mod" => {
                info.main = Some(module());
                last = Last::Main;
            }
            "dep" => {
                info.deps.push(module());
                last = Last::Dep;
            }
            "=>" => {
                let target = match last {
                    Last::Main => info.main.as_mut(),
                    Last::Dep => info.deps.last_mut(),
                    Last::None => None,
                };
                if let Some(t) = target {
                    t.replace = Some(Box::new(module()));
                }
                last = Last::None;
            }
            _ => last = Last::None,
        }
    }
    info
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

/// Reads one candidate header and what follows it.
fn parse_candidate(c: &[u8]) -> GoFind {
    if c.len() < 32 || &c[..14] != MAGIC {
        return GoFind::NotGo;
    }
    let (ptr_size, flags) = (c[14], c[15]);
    if flags & 2 == 0 {
        if matches!(ptr_size, 4 | 8) {
            return GoFind::Unsupported("pointer-based Go build-info format (Go before 1.18)".into());
        }
        return GoFind::NotGo;
    }
    let mut at = 32;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let Some((n, used)) = uvarint(&c[at.min(c.len())..]) else {
            return GoFind::NotGo;
        };
        at += used;
        let Some(s) = usize::try_from(n).ok().and_then(|n| c.get(at..at.checked_add(n)?)) else {
            return if n as usize > CANDIDATE_BYTES {
                GoFind::Unsupported(format!("Go module info of {n} bytes, more than the {CANDIDATE_BYTES} read"))
            } else {
                GoFind::NotGo
            };
        };
        at += s.len();
        strings.push(s);
    }
    let version = String::from_utf8_lossy(strings[0]);
    if !(version.starts_with("go") || version.starts_with("devel")) || version.len() > 256 {
        return GoFind::NotGo;
    }
    let mut modinfo = strings[1];
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    GoFind::Found(parse_modinfo(&version, &String::from_utf8_lossy(modinfo)))
}

/// A byte range of the file captured as it streams past.
struct Capture {
    start: u64,
    end: u64,
    data: Vec<u8>,
}

impl Capture {
    fn feed(&mut self, base: u64, chunk: &[u8]) {
        let want = self.start + self.data.len() as u64;
        let chunk_end = base + chunk.len() as u64;
        if want >= self.end || want < base || want >= chunk_end {
            return;
        }
        let from = (want - base) as usize;
        let to = (self.end.min(chunk_end) - base) as usize;
        self.data.extend_from_slice(&chunk[from..to]);
    }
    fn get(&self, off: u64, len: u64) -> Option<&[u8]> {
        let from = usize::try_from(off.checked_sub(self.start)?).ok()?;
        self.data.get(from..from.checked_add(usize::try_from(len).ok()?)?)
    }
}

struct Elf {
    class64: bool,
    little: bool,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    shstrndx: u64,
}

impl Elf {
    fn parse(h: &[u8]) -> Option<Elf> {
        if h.len() < 52 || !is_elf(h) {
            return None;
        }
        let class64 = match h[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = match h[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let e = Elf { class64, little, shoff: 0, shentsize: 0, shnum: 0, shstrndx: 0 };
        let (shoff, rest) = if class64 { (e.word(h, 0x28, 8)?, 0x3a) } else { (e.word(h, 0x20, 4)?, 0x2e) };
        Some(Elf { shoff, shentsize: e.word(h, rest, 2)?, shnum: e.word(h, rest + 2, 2)?, shstrndx: e.word(h, rest + 4, 2)?, ..e })
    }
    fn word(&self, b: &[u8], at: usize, n: usize) -> Option<u64> {
        let b = b.get(at..at + n)?;
        Some(if self.little { b.iter().rev().fold(0, |a, &x| a << 8 | u64::from(x)) } else { b.iter().fold(0, |a, &x| a << 8 | u64::from(x)) })
    }
    /// (name offset, file offset, size) of section `i` in the table.
    fn section(&self, table: &[u8], i: u64) -> Option<(u64, u64, u64)> {
        let at = usize::try_from(i.checked_mul(self.shentsize)?).ok()?;
        let s = table.get(at..at.checked_add(self.shentsize as usize)?)?;
        if self.class64 {
            Some((self.word(s, 0, 4)?, self.word(s, 24, 8)?, self.word(s, 32, 8)?))
        } else {
            Some((self.word(s, 0, 4)?, self.word(s, 16, 4)?, self.word(s, 20, 4)?))
        }
    }
    /// The file offset of `.go.buildinfo`, when the section headers and
    /// their string table were captured and name it.
    fn buildinfo_offset(&self, cap: &Capture) -> Option<u64> {
        let table = cap.get(self.shoff, self.shnum.checked_mul(self.shentsize)?)?;
        let (_, str_off, str_size) = self.section(table, self.shstrndx)?;
        let names = cap.get(str_off, str_size)?;
        (0..self.shnum).find_map(|i| {
            let (name, off, _) = self.section(table, i)?;
            let rest = names.get(usize::try_from(name).ok()?..)?;
            (rest.split(|&b| b == 0).next()? == b".go.buildinfo").then_some(off)
        })
    }
}

/// Streams one file (whose first bytes are `head`, already read) and
/// finds its Go build information. Reads `r` to its end.
pub fn scan<R: Read>(head: &[u8], r: &mut R) -> std::io::Result<GoFind> {
    let mut chunk = vec![0u8; 256 << 10];
    // The first bytes, kept for the ELF header.
    let mut start: Vec<u8> = head.to_vec();
    // Unscanned bytes (fewer than 14 past the last aligned offset) and the
    // file offset of their first byte.
    let mut win: Vec<u8> = Vec::new();
    let mut win_base = 0u64;
    let mut base = 0u64;
    let mut elf: Option<Elf> = None;
    let mut shdrs: Option<Capture> = None;
    let mut cands: Vec<Capture> = Vec::new();
    let mut first = true;
    loop {
        let n = if first {
            first = false;
            chunk[..head.len()].copy_from_slice(head);
            head.len()
        } else {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let data = &chunk[..n];
        if elf.is_none() && start.len() < 64 {
            if base > 0 || start.len() < head.len() {
                start.extend_from_slice(&data[..(64 - start.len()).min(n)]);
            }
            if start.len() >= 64 {
                elf = Elf::parse(&start);
                if let Some(e) = &elf {
                    let size = (e.shnum * e.shentsize).min(MAX_SHDR_BYTES);
                    shdrs = Some(Capture { start: e.shoff.saturating_sub(BEFORE_SHDRS), end: e.shoff + size, data: Vec::new() });
                }
            }
        }
        if let Some(c) = &mut shdrs {
            c.feed(base, data);
        }
        for c in &mut cands {
            c.feed(base, data);
        }
        win.extend_from_slice(data);
        // Check each 16-aligned offset whose 14 magic bytes are here.
        let mut i = ((win_base + 15) & !15) - win_base;
        while i as usize + MAGIC.len() <= win.len() {
            let at = i as usize;
            if win[at] == 0xff && &win[at..at + MAGIC.len()] == MAGIC && cands.len() < MAX_CANDIDATES {
                let off = win_base + i;
                let mut c = Capture { start: off, end: off + CANDIDATE_BYTES as u64, data: Vec::new() };
                c.feed(win_base, &win);
                cands.push(c);
            }
            i += 16;
        }
        let keep_from = (i as usize).min(win.len());
        win.drain(..keep_from);
        win_base += keep_from as u64;
        base += n as u64;
    }
    if cands.is_empty() {
        return Ok(GoFind::NotGo);
    }
    if let Some(off) = elf.as_ref().zip(shdrs.as_ref()).and_then(|(e, c)| e.buildinfo_offset(c)) {
        if let Some(c) = cands.iter().find(|c| c.start == off) {
            return Ok(parse_candidate(&c.data));
        }
    }
    let mut unsupported = None;
    for c in &cands {
        match parse_candidate(&c.data) {
            GoFind::Found(info) => return Ok(GoFind::Found(info)),
            GoFind::Unsupported(why) => unsupported = unsupported.or(Some(why)),
            GoFind::NotGo => {}
        }
    }
    Ok(unsupported.map_or(GoFind::NotGo, GoFind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{index_layer, merge, Limits};
    use crate::matcher::{match_image, AdvisoryDb};
    use crate::version::VersionFormat;

    const REGISTRY: &str = "/usr/bin/docker-registry";

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn registry() -> Option<Vec<u8>> {
        let r = std::fs::read(REGISTRY).ok();
        if r.is_none() {
            eprintln!("skipped: {REGISTRY} is absent (Debian's docker-registry package, in scripts/setup-debian.sh)");
        }
        r
    }

    /// Reads in pieces of `n` bytes, so the magic and the captured ranges
    /// straddle reads.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn scan_bytes(b: &[u8], piece: usize) -> GoFind {
        scan(&b[..64], &mut Dribble(&b[64..], piece)).unwrap()
    }

    /// Debian's docker-registry 2.8.2 is built with go1.19.8 in GOPATH
    /// mode (dh-golang): its build info names the main package and the
    /// build settings, but no `mod` or `dep` line.
    #[test]
    fn debians_docker_registry_in_a_layer() {
        let Some(bin) = registry() else { return };
        let layer = tar_of(&[("usr/bin/docker-registry", &bin), ("etc/docker/registry/config.yml", b"version: 0.1\n")]);
        let idx = index_layer(&layer[..], &Limits::default()).unwrap();
        eprintln!("docker-registry: {:?}", idx.go_binaries);
        assert!(idx.unsupported.is_empty(), "{:?}", idx.unsupported);
        let pkgs = &idx.go_binaries["usr/bin/docker-registry"];
        let got: Vec<_> = pkgs.iter().map(|p| (p.name.as_str(), p.version.as_str(), p.format)).collect();
        assert_eq!(got, vec![("stdlib", "1.19.8", VersionFormat::Go)]);
        let GoFind::Found(info) = scan_bytes(&bin, 256 << 10) else { panic!("no build info") };
        assert_eq!((info.go_version.as_str(), info.path.as_str()), ("go1.19.8", "github.com/docker/distribution/cmd/registry"));
        assert_eq!((info.main.is_none(), info.deps.len()), (true, 0));
        // Whiteouts: a later layer deleting the binary removes its packages.
        let gone = index_layer(&tar_of(&[("usr/bin/.wh.docker-registry", b"")])[..], &Limits::default()).unwrap();
        let img = merge(&[("sha256:l1".into(), idx.clone())]);
        assert_eq!(img.packages.len(), 1);
        assert_eq!(img.packages[0].added_by, "sha256:l1");
        assert!(merge(&[("sha256:l1".into(), idx), ("sha256:l2".into(), gone)]).packages.is_empty());
    }

    #[test]
    fn without_section_headers_odd_reads_and_old_format() {
        let Some(bin) = registry() else { return };
        let want = scan_bytes(&bin, 256 << 10);
        assert!(matches!(want, GoFind::Found(_)));
        assert_eq!(scan_bytes(&bin, 4093), want);
        // Section headers stripped (e_shoff, e_shnum zeroed): the aligned scan finds it.
        let mut stripped = bin.clone();
        stripped[0x28..0x30].fill(0);
        stripped[0x3c..0x3e].fill(0);
        assert_eq!(scan_bytes(&stripped, 65521), want);
        // The flags byte of the pre-1.18 layout: said aloud, not skipped.
        let at = bin.windows(14).position(|w| w == MAGIC).unwrap();
        let mut old = bin.clone();
        old[at + 15] = 0;
        let idx = index_layer(&tar_of(&[("bin/old", &old)])[..], &Limits::default()).unwrap();
        assert!(idx.go_binaries.is_empty());
        assert_eq!(idx.unsupported, vec!["unsupported Go build-info format (pointer-based Go build-info format (Go before 1.18)): bin/old".to_string()]);
        // Too large to read: counted too.
        let idx = index_layer(&tar_of(&[("bin/big", &bin)])[..], &Limits { max_binary_bytes: 1 << 20, ..Limits::default() }).unwrap();
        assert!(idx.unsupported[0].starts_with("ELF file too large"), "{:?}", idx.unsupported);
        // A shared library with no Go in it is not a Go binary.
        if let Ok(libc) = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6") {
            assert_eq!(scan_bytes(&libc, 1 << 16), GoFind::NotGo);
        }
    }

    #[test]
    fn toolchain_versions() {
        for (go, osv) in [
            ("go1.19.8", Some("1.19.8")),
            ("go1.21", Some("1.21.0")),
            ("go1.21rc2", Some("1.21.0-rc.2")),
            ("go1.20 X:boringcrypto", Some("1.20.0")),
            ("devel go1.22-abc", None),
            ("go1.25-20250209-RC00", None),
        ] {
            assert_eq!(stdlib_version(go).as_deref(), osv, "{go}");
        }
    }

    /// Builds a program with Debian's Go (golang-go) against a module
    /// served by a file-system GOPROXY (no network), with a `replace`
    /// pinning the dependency to a later version, and a second dependency
    /// at a pseudo-version. None when `go` is not installed.
    fn build_with_go() -> Option<(std::path::PathBuf, Vec<u8>)> {
        use std::process::Command;
        if Command::new("go").arg("version").output().is_err() {
            eprintln!("skipped: no `go` command (Debian's golang-go, in scripts/setup-debian.sh)");
            return None;
        }
        let t = std::env::temp_dir().join(format!("berth-gobin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let module = |path: &str, version: &str, file: &str, body: &str| {
            let at = t.join("proxy").join(path).join("@v");
            std::fs::create_dir_all(&at).unwrap();
            let gomod = format!("module {path}\n\ngo 1.19\n");
            std::fs::write(at.join(format!("{version}.mod")), &gomod).unwrap();
            std::fs::write(at.join(format!("{version}.info")), format!("{{\"Version\":\"{version}\",\"Time\":\"2020-01-01T00:00:00Z\"}}")).unwrap();
            let mut list = std::fs::read_to_string(at.join("list")).unwrap_or_default();
            list.push_str(&format!("{version}\n"));
            std::fs::write(at.join("list"), list).unwrap();
            let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr(sys.argv[2] + '/go.mod', sys.argv[3])\n    z.writestr(sys.argv[2] + '/' + sys.argv[4], sys.argv[5])\n";
            let zip = at.join(format!("{version}.zip"));
            let st = Command::new("python3").args(["-c", script, zip.to_str().unwrap(), &format!("{path}@{version}"), &gomod, file, body]).status().unwrap();
            assert!(st.success());
        };
        module("example.com/dep", "v1.2.3", "dep.go", "package dep\n\nfunc Hello() string { return \"old\" }\n");
        module("example.com/dep", "v1.2.4", "dep.go", "package dep\n\nfunc Hello() string { return \"new\" }\n");
        module("example.com/other", "v0.0.0-20200101000000-abcdef123456", "other.go", "package other\n\nconst Name = \"other\"\n");
        let app = t.join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(
            app.join("go.mod"),
            "module example.com/app\n\ngo 1.19\n\nrequire (\n\texample.com/dep v1.2.3\n\texample.com/other v0.0.0-20200101000000-abcdef123456\n)\n\nreplace example.com/dep v1.2.3 => example.com/dep v1.2.4\n",
        )
        .unwrap();
        std::fs::write(app.join("main.go"), "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/dep\"\n\t\"example.com/other\"\n)\n\nfunc main() { fmt.Println(dep.Hello(), other.Name) }\n").unwrap();
        let out = Command::new("go")
            .args(["build", "-o", "app", "."])
            .current_dir(&app)
            .env("HOME", &t)
            .env("GOPATH", t.join("gopath"))
            .env("GOCACHE", t.join("cache"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", format!("file://{}", t.join("proxy").display()))
            .env("GOSUMDB", "off")
            .env("GOTOOLCHAIN", "local")
            .output()
            .unwrap();
        assert!(out.status.success(), "go build: {}", String::from_utf8_lossy(&out.stderr));
        let bin = std::fs::read(app.join("app")).unwrap();
        Some((t, bin))
    }

    #[test]
    fn a_program_built_by_debians_go_and_an_osv_go_advisory() {
        let Some((dir, bin)) = build_with_go() else { return };
        let shown = std::process::Command::new("go").args(["version", "-m"]).arg(dir.join("app/app")).output().unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout).to_string();
        // Keep the module cache's read-only files from failing the cleanup.
        let _ = std::process::Command::new("chmod").args(["-R", "u+w"]).arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("go version -m:\n{shown}");
        let GoFind::Found(info) = scan_bytes(&bin, 1 << 18) else { panic!("no build info") };
        // Agrees with what the toolchain itself reports.
        assert!(shown.contains(&format!(": {}\n", info.go_version)), "{shown}");
        assert_eq!(info.path, "example.com/app");
        assert_eq!(info.main.as_ref().map(|m| (m.path.as_str(), m.version.as_str())), Some(("example.com/app", "(devel)")));
        let deps: Vec<_> =
            info.deps.iter().map(|m| (m.path.as_str(), m.version.as_str(), m.built().version.as_str(), m.built().sum.starts_with("h1:"))).collect();
        assert_eq!(
            deps,
            vec![
                ("example.com/dep", "v1.2.3", "v1.2.4", true),
                ("example.com/other", "v0.0.0-20200101000000-abcdef123456", "v0.0.0-20200101000000-abcdef123456", true)
            ]
        );

        let layer = tar_of(&[("app", &bin)]);
        let idx = index_layer(&layer[..], &Limits::default()).unwrap();
        let img = merge(&[("sha256:app".into(), idx)]);
        let stdlib = stdlib_version(&info.go_version).unwrap();
        let got: Vec<_> = img.packages.iter().map(|p| (p.package.name.as_str(), p.package.version.as_str())).collect();
        assert_eq!(got, vec![("example.com/dep", "v1.2.4"), ("example.com/other", "v0.0.0-20200101000000-abcdef123456"), ("stdlib", stdlib.as_str())]);

        // OSV Go records as the Go vulnerability database publishes them:
        // SEMVER ranges, versions without `v`, modules by path, the
        // toolchain as `stdlib`.
        let records = serde_json::json!([
            {"id": "GO-2099-0001", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2099-0001"],
             "affected": [{"package": {"ecosystem": "Go", "name": "example.com/dep"},
                           "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.2.0"}, {"fixed": "1.2.5"}]}]}]},
            {"id": "GO-2099-0002", "modified": "2024-01-01T00:00:00Z",
             "affected": [{"package": {"ecosystem": "Go", "name": "example.com/dep"},
                           "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.4"}]}]}]},
            {"id": "GO-2099-0003", "modified": "2024-01-01T00:00:00Z",
             "affected": [{"package": {"ecosystem": "Go", "name": "example.com/other"},
                           "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.0.0-20210101000000-000000000000"}]}]}]},
            {"id": "GO-2023-2185", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2023-45283"],
             "affected": [{"package": {"ecosystem": "Go", "name": "stdlib"},
                           "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.20.11"}, {"introduced": "1.21.0-0"}, {"fixed": "1.21.4"}]}]}]},
            {"id": "PYSEC-2099-1", "modified": "2024-01-01T00:00:00Z",
             "affected": [{"package": {"ecosystem": "PyPI", "name": "example.com/dep"},
                           "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}
        ]);
        let (_, advisories) = crate::feed::parse(&serde_json::to_vec(&records).unwrap()).unwrap();
        let report = match_image(&AdvisoryDb::new(advisories), &img);
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for (p, fs) in report.index.packages.iter().zip(&report.findings) {
            for f in fs {
                rows.push((p.package.name.clone(), f.id.clone(), f.fixed_by.clone().unwrap_or_default()));
            }
        }
        let mut want = vec![
            ("example.com/dep".to_string(), "CVE-2099-0001".to_string(), "1.2.5".to_string()),
            ("example.com/other".into(), "GO-2099-0003".into(), "0.0.0-20210101000000-000000000000".into()),
        ];
        // Debian's Go 1.19 is before 1.20.11; a newer toolchain may not be.
        if crate::version::go::compare(&stdlib, "1.20.11").is_lt() {
            want.push(("stdlib".into(), "CVE-2023-45283".into(), "1.20.11".into()));
        }
        assert_eq!(rows, want);
        let body = crate::quay::security_body("sha256:m", "scanned", Some(&report), true);
        assert_eq!(body["data"]["Layer"]["Features"][0]["VersionFormat"], "semver");
    }
}
