//! The names of where and in what precision a model runs: `cpu-f32` (the reference), `cpu-f16`,
//! `cpu-bf16`, `cuda-f16`, `cuda-bf16`. Running them is the main crate's business
//! (`layercheck::target::TargetRuntime`).

use std::fmt;
use std::str::FromStr;

/// The device half of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// The floating-point precision of a target's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// The name used in target names: `f32`, `f16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// A device and a precision, written `cpu-f16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub device: DeviceKind,
    pub precision: Precision,
}

/// Errors of parsing or resolving a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("unknown target \"{0}\"\n(hint: targets are cpu-f32, cpu-f16, cpu-bf16, cuda-f16, cuda-bf16)")]
    Unknown(String),
    #[error("target {0} is not available: this libtorch sees no CUDA device\n(hint: run it on a GPU machine with a CUDA build of libtorch 2.13.0, see README)")]
    Unavailable(Target),
}

impl Target {
    /// The CPU float32 reference.
    pub const REFERENCE: Target = Target { device: DeviceKind::Cpu, precision: Precision::F32 };

    /// Every target layercheck knows, in a stable order.
    pub const ALL: [Target; 5] = [
        Target::REFERENCE,
        Target { device: DeviceKind::Cpu, precision: Precision::F16 },
        Target { device: DeviceKind::Cpu, precision: Precision::Bf16 },
        Target { device: DeviceKind::Cuda, precision: Precision::F16 },
        Target { device: DeviceKind::Cuda, precision: Precision::Bf16 },
    ];
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = match self.device {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        };
        write!(f, "{device}-{}", self.precision.name())
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL.into_iter().find(|t| t.to_string() == s).ok_or_else(|| TargetError::Unknown(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for target in Target::ALL {
            assert_eq!(target.to_string().parse::<Target>().unwrap(), target);
        }
        let names: Vec<String> = Target::ALL.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["cpu-f32", "cpu-f16", "cpu-bf16", "cuda-f16", "cuda-bf16"]);
    }

    #[test]
    fn unknown_targets_say_so() {
        let err = "tpu-f8".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("unknown target \"tpu-f8\"") && err.contains("hint"), "{err}");
    }
}
