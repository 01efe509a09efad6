//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough
//! to find an enum by name and list its values, so drop reasons are named from
//! the running kernel's own `enum skb_drop_reason`, never from a built-in table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data is not BTF (bad magic, short header or sections out of bounds).
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A type of a kind this reader does not know: it cannot skip it.
    #[error("BTF type #{index} has unknown kind {kind}")]
    UnknownKind {
        /// Type index.
        index: u32,
        /// Kind number.
        kind: u32,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, BtfError>;

const MAGIC: u16 = 0xeb9f;

fn rd32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Finds `enum <name>` (or `enum64`) and returns its (value, name) pairs.
/// `Ok(None)` if the enum does not exist (e.g. `skb_drop_reason` before 5.17).
pub fn enum_values(data: &[u8], name: &str) -> Result<Option<Vec<(u64, String)>>> {
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
        return Err(BtfError::Malformed(
            "bad magic or short header (big-endian BTF is not read)",
        ));
    }
    let hdr_len = rd32(data, 4).ok_or(BtfError::Malformed("header"))? as usize;
    let type_off = rd32(data, 8).ok_or(BtfError::Malformed("header"))? as usize;
    let type_len = rd32(data, 12).ok_or(BtfError::Malformed("header"))? as usize;
    let str_off = rd32(data, 16).ok_or(BtfError::Malformed("header"))? as usize;
    let str_len = rd32(data, 20).ok_or(BtfError::Malformed("header"))? as usize;
    let types = data
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or(BtfError::Malformed("type section out of bounds"))?;
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or(BtfError::Malformed("string section out of bounds"))?;
    let string = |off: u32| -> &str {
        let Some(rest) = strings.get(off as usize..) else {
            return "";
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    };

    let mut pos = 0usize;
    let mut index = 1u32;
    while pos + 12 <= types.len() {
        let name_off = rd32(types, pos).ok_or(BtfError::Malformed("type"))?;
        let info = rd32(types, pos + 4).ok_or(BtfError::Malformed("type"))?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let body = pos + 12;
        let extra = match kind {
            1 => 4,             // INT
            2 | 7..=12 => 0,    // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC
            3 => 12,            // ARRAY
            4 | 5 => vlen * 12, // STRUCT, UNION
            6 => vlen * 8,      // ENUM
            13 => vlen * 8,     // FUNC_PROTO
            14 => 4,            // VAR
            15 => vlen * 12,    // DATASEC
            16 | 18 => 0,       // FLOAT, TYPE_TAG
            17 => 4,            // DECL_TAG
            19 => vlen * 12,    // ENUM64
            k => return Err(BtfError::UnknownKind { index, kind: k }),
        };
        if (kind == 6 || kind == 19) && string(name_off) == name {
            let signed = info & (1 << 31) != 0;
            let mut out = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let (n, v) = if kind == 6 {
                    let o = body + i * 8;
                    let n = rd32(types, o).ok_or(BtfError::Malformed("enum"))?;
                    let v = rd32(types, o + 4).ok_or(BtfError::Malformed("enum"))?;
                    let v = if signed {
                        v as i32 as i64 as u64
                    } else {
                        u64::from(v)
                    };
                    (n, v)
                } else {
                    let o = body + i * 12;
                    let n = rd32(types, o).ok_or(BtfError::Malformed("enum64"))?;
                    let lo = rd32(types, o + 4).ok_or(BtfError::Malformed("enum64"))?;
                    let hi = rd32(types, o + 8).ok_or(BtfError::Malformed("enum64"))?;
                    (n, u64::from(lo) | (u64::from(hi) << 32))
                };
                out.push((v, string(n).to_string()));
            }
            return Ok(Some(out));
        }
        pos = body + extra;
        index += 1;
    }
    Ok(None)
}

/// Names of the kernel's drop reasons, keyed by value, prefix `SKB_DROP_REASON_`
/// removed (`NETFILTER_DROP`, `NO_SOCKET`, ...).
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, Arc<str>>,
}

impl DropReasons {
    /// Reads `enum skb_drop_reason` from the running kernel's BTF.
    /// Empty (every reason unnamed) on kernels without it (before 5.17).
    pub fn from_kernel() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads `enum skb_drop_reason` from a BTF file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_btf(&data)
    }

    /// Reads `enum skb_drop_reason` from BTF bytes.
    pub fn from_btf(data: &[u8]) -> Result<Self> {
        let values = enum_values(data, "skb_drop_reason")?.unwrap_or_default();
        let names = values
            .into_iter()
            .filter_map(|(v, n)| {
                let short = n
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| n.strip_prefix("SKB_"))
                    .unwrap_or(&n);
                u32::try_from(v).ok().map(|v| (v, Arc::from(short)))
            })
            .collect();
        Ok(DropReasons { names })
    }

    /// Builds a table from explicit pairs (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        DropReasons {
            names: pairs.into_iter().map(|(v, n)| (v, Arc::from(n))).collect(),
        }
    }

    /// The name of a reason value, if the kernel has one.
    pub fn name(&self, value: u32) -> Option<Arc<str>> {
        self.names.get(&value).cloned()
    }

    /// The value of a reason name (without prefix), if the kernel has it.
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| &***n == name)
            .map(|(v, _)| *v)
    }

    /// Number of known reasons.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if no reason is known (kernel before 5.17).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with an INT and an ENUM named `skb_drop_reason`.
    fn synthetic() -> Vec<u8> {
        let strings = b"\0int\0skb_drop_reason\0SKB_NOT_DROPPED_YET\0SKB_DROP_REASON_NO_SOCKET\0";
        let mut types = Vec::new();
        // INT "int": name 1, kind 1, size 4, + 4 bytes encoding
        for w in [1u32, 1 << 24, 4, 0x20] {
            types.extend_from_slice(&w.to_le_bytes());
        }
        // ENUM: name 5, kind 6, vlen 2, size 4
        for w in [5u32, (6 << 24) | 2, 4, 21, 0, 41, 2] {
            types.extend_from_slice(&w.to_le_bytes());
        }
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn reads_enum_from_synthetic_btf() {
        let r = DropReasons::from_btf(&synthetic()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.name(2).as_deref(), Some("NO_SOCKET"));
        assert_eq!(r.name(0).as_deref(), Some("NOT_DROPPED_YET"));
        assert_eq!(r.value("NO_SOCKET"), Some(2));
        assert!(r.name(3).is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(DropReasons::from_btf(&[0; 3]).is_err());
        let mut b = synthetic();
        b.truncate(40);
        assert!(DropReasons::from_btf(&b).is_err());
    }

    #[test]
    fn reads_running_kernel_when_present() {
        if !Path::new(VMLINUX_BTF).exists() {
            return; // unit tests run anywhere; the privileged tests require BTF
        }
        let r = DropReasons::from_kernel().unwrap();
        assert!(r.value("NETFILTER_DROP").is_some(), "{r:?}");
        assert!(r.value("NO_SOCKET").is_some());
    }
}
