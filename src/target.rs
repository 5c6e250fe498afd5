//! Where and in what precision a model runs: the target names (`cpu-f32`, the reference, `cpu-f16`,
//! `cpu-bf16`, `cuda-f16`, `cuda-bf16`) and what they mean to libtorch.

use tch::{Device, Kind};

pub use layercheck_suite::target::{DeviceKind, Precision, Target, TargetError};

/// A target as libtorch runs it.
pub trait TargetRuntime {
    /// Whether this process can run the target.
    fn is_available(&self) -> bool;
    /// The libtorch device, or an error saying why the target cannot run here.
    fn device(self) -> Result<Device, TargetError>;
    /// The libtorch kind of the target's weights and activations.
    fn kind(self) -> Kind;
}

impl TargetRuntime for Target {
    fn is_available(&self) -> bool {
        self.device().is_ok()
    }

    fn device(self) -> Result<Device, TargetError> {
        match self.device {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceKind::Cuda => Err(TargetError::Unavailable(self)),
        }
    }

    fn kind(self) -> Kind {
        match self.precision {
            Precision::F32 => Kind::Float,
            Precision::F16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_targets_say_so() {
        if !tch::Cuda::is_available() {
            let err = "cuda-f16".parse::<Target>().unwrap().device().unwrap_err().to_string();
            assert!(err.starts_with("target cuda-f16 is not available"), "{err}");
        }
    }
}
