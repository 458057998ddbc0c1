//! `hearth_secagg`, the Python module the ServerApp drives a secure round
//! with: the same Rust code as the devices' half (crate `hearth-secagg`),
//! so the two cannot drift. Python routes bytes between the Grid and this
//! module; it never sees a key, a share or one device's vector.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use secagg::wire::Task;
use secagg::{CoordinatorRound, NoiseTerms, Quantization, RoundConfig};

/// One round of secure aggregation, coordinator side.
#[pyclass(module = "hearth_secagg")]
struct Round {
    inner: Option<CoordinatorRound>,
    quantization: Quantization,
    /// How many of the cohort the devices' noise shares are sized for (0:
    /// no distributed noise).
    honest: u32,
}

#[pymethods]
impl Round {
    /// A round over `cohort` (node ids). `scale` 0 takes the largest that
    /// cannot wrap (`largest_scale`, with room for the devices' noise).
    /// `noise_multiplier` > 0 asks each device for a share of distributed
    /// noise, sized for `honest_fraction` of the cohort; `sampling_rate`
    /// in (0, 1) with it asks each device to flip its own coin and put its
    /// update in the sum with that probability (0 or 1: no coin).
    /// `count_weight` > 0 (adaptive clipping) makes the vector's last value
    /// each device's `count_weight * (bit - 1/2)`, its bit whether its
    /// update was within the train config's clip norm. `task` says what
    /// the devices sum: `"train"` (model updates) or `"evaluate-model"`
    /// (each device's evaluation of the candidate the masked-input stage
    /// carries; no count) or `"experiment-report"` (each device's per-arm
    /// metric report of the experiment the masked-input stage names).
    #[new]
    #[pyo3(signature = (*, run_id, round, bits, clip_norm, max_cohort, degree, threshold_fraction, vector_len, cohort, scale = 0.0, noise_multiplier = 0.0, honest_fraction = 2.0 / 3.0, sampling_rate = 0.0, count_weight = 0.0, task = "train"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        run_id: u64,
        round: u64,
        bits: u32,
        clip_norm: f64,
        max_cohort: u32,
        degree: usize,
        threshold_fraction: f64,
        vector_len: usize,
        cohort: Vec<u64>,
        scale: f64,
        noise_multiplier: f64,
        honest_fraction: f64,
        sampling_rate: f64,
        count_weight: f64,
        task: &str,
    ) -> PyResult<Self> {
        let task = match task {
            "train" => Task::Train,
            "evaluate-model" => Task::EvaluateModel,
            "experiment-report" => Task::ExperimentReport,
            other => {
                return Err(PyValueError::new_err(format!(
                    "task must be train, evaluate-model or experiment-report, not {other:?}"
                )));
            }
        };
        let noise = NoiseTerms { multiplier: noise_multiplier, honest_fraction };
        let scale =
            if scale > 0.0 { scale } else { noise.largest_scale(bits, clip_norm, cohort.len() as u32, max_cohort) };
        let quantization = Quantization { bits, scale, clip_norm, max_cohort };
        let config = RoundConfig {
            run_id,
            round,
            quantization,
            degree,
            threshold_fraction,
            vector_len,
            noise,
            sampling_rate,
            count_weight,
            task,
        };
        let honest = if noise.multiplier > 0.0 { noise.honest(cohort.len() as u32) } else { 0 };
        let inner = CoordinatorRound::new(config, &cohort).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Round { inner: Some(inner), quantization, honest })
    }

    /// The stage under way: start, setup, share-keys, masked-input, unmask,
    /// finished.
    #[getter]
    fn stage(&self) -> &'static str {
        self.inner.as_ref().map_or("finished", |r| r.stage().name())
    }

    #[getter]
    fn scale(&self) -> f64 {
        self.quantization.scale
    }

    #[getter]
    fn bits(&self) -> u32 {
        self.quantization.bits
    }

    /// With distributed noise, how many of the cohort the devices size
    /// their shares for (ceil of the honest fraction times the cohort, as
    /// the devices and this round count them); 0 without.
    #[getter]
    fn honest(&self) -> u32 {
        self.honest
    }

    /// Closes the stage under way and gives each device left its next
    /// message: a list of (node id, bytes). Raises RuntimeError when too
    /// few devices are left to go on.
    fn advance<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<(u64, Bound<'py, PyBytes>)>> {
        let round = self.inner.as_mut().ok_or_else(|| PyRuntimeError::new_err("the round is finished"))?;
        let messages = round.advance().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(messages.into_iter().map(|(node, bytes)| (node, PyBytes::new(py, &bytes))).collect())
    }

    /// Takes a device's reply to the stage under way; None when accepted,
    /// else why it was refused (the device then counts as dropped).
    fn receive(&mut self, node: u64, reply: &[u8]) -> PyResult<Option<String>> {
        let round = self.inner.as_mut().ok_or_else(|| PyRuntimeError::new_err("the round is finished"))?;
        Ok(round.receive(node, reply).err().map(|r| r.reason))
    }

    /// Unmasks the sum: a dict of `sum` (the float64 sum of the survivors'
    /// updates, little-endian bytes), `sum_integers` (the sum modulo
    /// 2^bits itself, as little-endian u32: what tests check), `survivors`, `dropped` (four lists:
    /// at setup, share-keys, masked-input, unmask) and `rejected` ((node,
    /// reason) pairs). Raises RuntimeError when a mask cannot be removed.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let round = self.inner.take().ok_or_else(|| PyRuntimeError::new_err("the round is finished"))?;
        let aggregate = py.detach(|| round.finish()).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let sum: Vec<u8> = aggregate.dequantized(&self.quantization).iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = PyDict::new(py);
        out.set_item("sum", PyBytes::new(py, &sum))?;
        let integers: Vec<u8> = aggregate.sum.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.set_item("sum_integers", PyBytes::new(py, &integers))?;
        out.set_item("survivors", aggregate.survivors)?;
        out.set_item("dropped", aggregate.dropped.to_vec())?;
        let rejected: Vec<(u64, String)> = aggregate.rejected.into_iter().map(|r| (r.node, r.reason)).collect();
        out.set_item("rejected", rejected)?;
        Ok(out)
    }
}

/// The largest scale at which `max_cohort` updates clipped to `clip_norm`
/// sum without wrapping modulo 2^bits.
#[pyfunction]
fn largest_scale(bits: u32, clip_norm: f64, max_cohort: u32) -> f64 {
    Quantization::largest_scale(bits, clip_norm, max_cohort)
}

#[pymodule(name = "hearth_secagg")]
fn python_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Round>()?;
    m.add_function(wrap_pyfunction!(largest_scale, m)?)?;
    Ok(())
}
