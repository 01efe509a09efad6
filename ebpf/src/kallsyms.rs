//! The kernel's function symbols (`/proc/kallsyms`), to name where a packet
//! was dropped: a drop event carries the address of the code that freed the
//! packet, and naming it tells a drop by a BPF program or helper (an eBPF
//! datapath) from one by the stack. Read once at load; addresses are only
//! readable by root (otherwise they are all zero and nothing is named).

use std::path::Path;
use std::sync::Arc;

/// Where the kernel lists its symbols.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// Function symbols by address, compact: one string of names and a sorted
/// table of (address, name offset, name length).
#[derive(Debug, Default)]
pub struct KernelSymbols {
    names: String,
    table: Vec<(u64, u32, u16)>,
}

impl KernelSymbols {
    /// Reads [`KALLSYMS`]; an unreadable file gives an empty table (nothing is
    /// named), never an error.
    pub fn from_kernel() -> Self {
        Self::from_path(Path::new(KALLSYMS))
    }

    /// Reads a kallsyms listing from `path` (empty when unreadable).
    pub fn from_path(path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "kernel symbols not read");
                Self::default()
            }
        }
    }

    /// Parses `address type name [module]` lines, keeping text symbols
    /// (`t`/`T`) with a non-zero address.
    pub fn parse(text: &str) -> Self {
        let mut names = String::new();
        let mut table = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let (Ok(offset), Ok(len)) = (u32::try_from(names.len()), u16::try_from(name.len()))
            else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            names.push_str(name);
            table.push((addr, offset, len));
        }
        table.sort_unstable_by_key(|&(addr, _, _)| addr);
        KernelSymbols { names, table }
    }

    /// How many symbols are known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no symbol is known.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The function containing `addr`: the nearest symbol at or below it.
    pub fn name(&self, addr: u64) -> Option<Arc<str>> {
        if addr == 0 {
            return None;
        }
        let i = self.table.partition_point(|&(a, _, _)| a <= addr);
        let &(_, offset, len) = self.table.get(i.checked_sub(1)?)?;
        let start = offset as usize;
        self.names
            .get(start..start + usize::from(len))
            .map(Arc::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_named_by_the_nearest_function_below() {
        let symbols = KernelSymbols::parse(
            "ffffffff81000000 T _stext\n\
             ffffffff81eab3b0 T __dev_queue_xmit\n\
             ffffffff81eac000 t sch_handle_egress\n\
             ffffffff82000000 D some_data\n\
             ffffffffc0023334 t bpf_prog_2e0822bfc3b94ebe_nv_lab_tc_drop\t[bpf]\n\
             0000000000000000 T hidden\n\
             garbage\n",
        );
        assert_eq!(symbols.len(), 4);
        assert_eq!(
            symbols.name(0xffff_ffff_81ea_b710).as_deref(),
            Some("__dev_queue_xmit")
        );
        assert_eq!(
            symbols.name(0xffff_ffff_81ea_c001).as_deref(),
            Some("sch_handle_egress")
        );
        assert_eq!(
            symbols.name(0xffff_ffff_c002_3400).as_deref(),
            Some("bpf_prog_2e0822bfc3b94ebe_nv_lab_tc_drop")
        );
        assert_eq!(symbols.name(0x1000), None);
        assert_eq!(symbols.name(0), None);
        // Without root, kallsyms lists zeros: nothing is named.
        let hidden = KernelSymbols::parse("0000000000000000 T a\n0000000000000000 T b\n");
        assert!(hidden.is_empty());
        assert_eq!(hidden.name(0xffff_ffff_8100_0000), None);
    }
}
