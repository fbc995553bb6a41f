//! Products and TCB versions.
//!
//! A TCB_VERSION is eight bytes whose layout depends on the product: ABI spec
//! Table 3 ("TCB_VERSION Structure") for Milan and Genoa, and the Turin layout
//! of the same table in revision 1.58, which adds an FMC (first mutable code)
//! SPL and moves the other fields.

use core::fmt;

use crate::Error;

/// An SEV-SNP capable EPYC generation. The name is the one AMD's Key
/// Distribution Service (KDS) uses in its URLs and in the VCEK's
/// `productName` extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Product {
    /// EPYC 7003 (Zen 3, family 19h models 00h-0Fh).
    Milan,
    /// EPYC 9004/8004 (Zen 4, family 19h models 10h-1Fh and A0h-AFh).
    Genoa,
    /// EPYC 9005 (Zen 5, family 1Ah models 00h-11h).
    Turin,
}

impl Product {
    /// Every supported product, oldest first.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The product for a CPUID family and model, as reported in a v3+
    /// attestation report. Model ranges follow AMD's processor programming
    /// references for families 19h and 1Ah.
    pub fn from_cpuid(family: u8, model: u8, stepping: u8) -> Result<Self, Error> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Ok(Product::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Ok(Product::Genoa),
            (0x1A, 0x00..=0x11) => Ok(Product::Turin),
            _ => Err(Error::UnknownProduct {
                family,
                model,
                stepping,
            }),
        }
    }

    /// The product named by a VCEK/VLEK `productName` extension, such as
    /// `Milan-B0`, `Genoa` or `Turin`: the stepping suffix is ignored.
    pub fn from_kds_name(name: &str) -> Result<Self, Error> {
        let base = name.split_once('-').map_or(name, |(base, _)| base);
        match base {
            "Milan" => Ok(Product::Milan),
            "Genoa" => Ok(Product::Genoa),
            "Turin" => Ok(Product::Turin),
            _ => Err(Error::UnknownProductName(name.to_owned())),
        }
    }

    /// The KDS name of the product.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Whether the product uses the Turin TCB layout (with an FMC SPL) and an
    /// 8-byte hardware ID in its VCEK.
    pub fn has_fmc(self) -> bool {
        matches!(self, Product::Turin)
    }

    /// How many bytes of CHIP_ID the VCEK's hwID extension carries: 64 before
    /// Turin, 8 on Turin (the rest of CHIP_ID is zero).
    pub fn hw_id_len(self) -> usize {
        if self.has_fmc() { 8 } else { 64 }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Product {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_kds_name(s)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Product {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Product {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Product::from_kds_name(&name).map_err(serde::de::Error::custom)
    }
}

/// A decoded TCB_VERSION: the security patch level (SPL) of each firmware
/// component. Comparison is per component, never on the raw integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcbVersion {
    /// FMC SPL; present on Turin and later only.
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP operating system (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// CPU microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decode the eight raw bytes in the layout of `product`, checking that
    /// the reserved bytes are zero. `offset` is where the field sits in the
    /// enclosing structure, so an error can name it.
    ///
    /// Milan/Genoa: byte 0 boot loader, 1 TEE, 2-5 reserved, 6 SNP,
    /// 7 microcode. Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 4-6
    /// reserved, 7 microcode.
    pub fn decode(
        raw: [u8; 8],
        product: Product,
        field: &'static str,
        offset: usize,
    ) -> Result<Self, Error> {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = raw;
        if product.has_fmc() {
            super::zero(&[b4, b5, b6], field, offset.saturating_add(4))?;
            Ok(TcbVersion {
                fmc: Some(b0),
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
            })
        } else {
            super::zero(&[b2, b3, b4, b5], field, offset.saturating_add(2))?;
            Ok(TcbVersion {
                fmc: None,
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
            })
        }
    }

    /// Encode in the layout of `product`. An FMC value is dropped for a
    /// product without one; a missing FMC encodes as zero.
    pub fn encode(&self, product: Product) -> [u8; 8] {
        if product.has_fmc() {
            [
                self.fmc.unwrap_or(0),
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ]
        } else {
            [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ]
        }
    }

    /// The components as `(name, value)` pairs, in the order the spec lists
    /// them; FMC only where present.
    pub fn components(&self) -> impl Iterator<Item = (&'static str, u8)> {
        let fmc = self.fmc.map(|v| ("fmc", v));
        fmc.into_iter().chain([
            ("bootloader", self.bootloader),
            ("tee", self.tee),
            ("snp", self.snp),
            ("microcode", self.microcode),
        ])
    }

    /// Whether every component is at least the one in `min`. A minimum FMC is
    /// only met by a TCB that has an FMC.
    pub fn meets(&self, min: &TcbVersion) -> bool {
        let fmc_ok = match (self.fmc, min.fmc) {
            (_, None) => true,
            (Some(have), Some(want)) => have >= want,
            (None, Some(_)) => false,
        };
        fmc_ok
            && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, value) in self.components() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milan_layout() {
        let raw = [0x02, 0, 0, 0, 0, 0, 0x05, 0x44];
        let tcb = TcbVersion::decode(raw, Product::Milan, "reported_tcb", 0x180);
        let tcb = tcb.ok();
        assert_eq!(
            tcb,
            Some(TcbVersion {
                fmc: None,
                bootloader: 2,
                tee: 0,
                snp: 5,
                microcode: 68
            })
        );
        assert_eq!(tcb.map(|t| t.encode(Product::Milan)), Some(raw));
    }

    #[test]
    fn turin_layout_differs_from_milan() {
        // From ../shared/vectors/snp/README.md: raw 0001000200000047.
        let raw = [0x00, 0x01, 0x00, 0x02, 0, 0, 0, 0x47];
        let turin = TcbVersion::decode(raw, Product::Turin, "reported_tcb", 0x180).ok();
        assert_eq!(
            turin,
            Some(TcbVersion {
                fmc: Some(0),
                bootloader: 1,
                tee: 0,
                snp: 2,
                microcode: 71
            })
        );
        // Read with the Milan layout, byte 3 lands in a reserved byte.
        assert!(matches!(
            TcbVersion::decode(raw, Product::Milan, "reported_tcb", 0x180),
            Err(Error::ReservedNonZero { offset: 0x183, .. })
        ));
    }

    #[test]
    fn product_from_cpuid() {
        let cases = [
            (0x19, 0x01, Some(Product::Milan)),
            (0x19, 0x11, Some(Product::Genoa)),
            (0x19, 0xA0, Some(Product::Genoa)),
            (0x1A, 0x02, Some(Product::Turin)),
            (0x1A, 0x50, None),
            (0x17, 0x31, None),
        ];
        for (family, model, want) in cases {
            assert_eq!(Product::from_cpuid(family, model, 1).ok(), want);
        }
    }

    #[test]
    fn meets_is_per_component() {
        let have = TcbVersion {
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        };
        let mut min = have;
        assert!(have.meets(&min));
        min.snp = 9;
        assert!(!have.meets(&min));
        min = have;
        min.fmc = Some(0);
        assert!(!have.meets(&min));
    }
}
