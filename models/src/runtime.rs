//! ONNX Runtime: finding `libonnxruntime.so`, one process-wide environment, sessions on CPU or CUDA.
//!
//! `ort` is built with `load-dynamic`, so the library is found at run time, in this order:
//! an explicit path (`--ort-lib`), `$ORT_DYLIB_PATH`, the project venv made by `make setup` (its location is
//! recorded at compile time), then a `.venv` found by walking up from the running executable.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

pub const ORT_LIB_ENV: &str = "ORT_DYLIB_PATH";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot find libonnxruntime.so; run `make setup`, or pass --ort-lib / set {ORT_LIB_ENV}. Looked in: {}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LibraryNotFound { searched: Vec<PathBuf> },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("ONNX Runtime already loaded from {loaded}, cannot switch to {requested} in the same process")]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("cannot register the CUDA execution provider (is this an onnxruntime-gpu build with a GPU? try `make setup GPU=1`): {0}")]
    Cuda(String),
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

impl<R> From<ort::Error<R>> for RuntimeError
where
    ort::Error<R>: std::fmt::Display,
{
    fn from(e: ort::Error<R>) -> Self {
        RuntimeError::Ort(e.to_string())
    }
}

/// Where inference runs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

/// ONNX Runtime's graph optimisation level (`GraphOptimizationLevel`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptLevel {
    Disable,
    Basic,
    Extended,
    /// Everything, layout rewrites included: the fastest measured (docs/results/2026-12-04-photo-serving).
    #[default]
    All,
}

impl From<OptLevel> for GraphOptimizationLevel {
    fn from(l: OptLevel) -> Self {
        match l {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::Level3,
        }
    }
}

/// How to build an inference session. The defaults are the settings measured fastest on CPU
/// (docs/results/2026-12-04-photo-serving).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub device: Device,
    /// CUDA device ordinal when `device` is CUDA.
    pub cuda_device_id: i32,
    /// Threads inside one operator; 0 lets ONNX Runtime choose (one per physical core).
    pub intra_threads: usize,
    pub optimization: OptLevel,
    /// Plan activation memory once per input shape and reuse it.
    pub memory_pattern: bool,
    /// Intra-op threads spin between operators instead of sleeping: lower latency for one session alone,
    /// wasted cores when several sessions share them.
    pub spinning: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            cuda_device_id: 0,
            intra_threads: 0,
            optimization: OptLevel::All,
            memory_pattern: true,
            spinning: true,
        }
    }
}

/// The execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Provider {
    #[serde(rename = "CPUExecutionProvider")]
    Cpu,
    #[serde(rename = "CUDAExecutionProvider")]
    Cuda,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
        })
    }
}

fn find_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut candidates = Vec::new();
    for py in std::fs::read_dir(&lib).ok()?.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        for f in std::fs::read_dir(&capi).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("libonnxruntime.so") {
                candidates.push(f.path());
            }
        }
    }
    // Prefer the fully versioned file (the real library, not a symlink to it).
    candidates.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    candidates.into_iter().next()
}

/// Resolves the ONNX Runtime shared library path without loading it.
pub fn resolve_library(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os(ORT_LIB_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut searched = Vec::new();
    if let Some(venv) = option_env!("HETVIS_VENV") {
        let venv = PathBuf::from(venv);
        if let Some(p) = find_in_venv(&venv) {
            return Ok(p);
        }
        searched.push(venv);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let venv = dir.join(".venv");
            if let Some(p) = find_in_venv(&venv) {
                return Ok(p);
            }
            searched.push(venv);
        }
    }
    Err(RuntimeError::LibraryNotFound { searched })
}

struct Loaded {
    env: ort::environment::Environment,
    path: PathBuf,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (once per process) and returns the library path in use.
///
/// Later calls with no explicit path reuse the loaded library; an explicit, different path is an error
/// because a process can hold only one ONNX Runtime.
pub fn init(explicit: Option<&Path>) -> Result<&'static Path, RuntimeError> {
    Ok(&loaded(explicit)?.path)
}

fn loaded(explicit: Option<&Path>) -> Result<&'static Loaded, RuntimeError> {
    if let Some(l) = LOADED.get() {
        return check_same(l, explicit);
    }
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = LOADED.get() {
        return check_same(l, explicit);
    }
    let path = resolve_library(explicit)?;
    if !path.is_file() {
        return Err(RuntimeError::Load {
            path,
            message: "no such file".into(),
        });
    }
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::Load {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder.with_name("hetvis").build()?;
    tracing::debug!(path = %path.display(), "loaded ONNX Runtime");
    Ok(LOADED.get_or_init(|| Loaded { env, path }))
}

fn check_same(
    l: &'static Loaded,
    explicit: Option<&Path>,
) -> Result<&'static Loaded, RuntimeError> {
    match explicit {
        Some(p) if p != l.path => Err(RuntimeError::AlreadyLoaded {
            loaded: l.path.clone(),
            requested: p.to_owned(),
        }),
        _ => Ok(l),
    }
}

/// Builds a session for an ONNX model held in memory. CUDA registration fails loudly instead of falling back.
pub fn session_from_bytes(
    model: &[u8],
    config: &SessionConfig,
) -> Result<(Session, Provider), RuntimeError> {
    let env = &loaded(None)?.env;
    let mut builder = Session::builder(env)?
        .with_optimization_level(config.optimization.into())
        .map_err(RuntimeError::from)?
        .with_memory_pattern(config.memory_pattern)
        .map_err(RuntimeError::from)?
        .with_intra_op_spinning(config.spinning)
        .map_err(RuntimeError::from)?;
    if config.intra_threads > 0 {
        builder = builder
            .with_intra_threads(config.intra_threads)
            .map_err(RuntimeError::from)?;
    }
    let provider = match config.device {
        Device::Cpu => Provider::Cpu,
        Device::Cuda => {
            let cuda = ort::ep::CUDA::default()
                .with_device_id(config.cuda_device_id)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| RuntimeError::Cuda(e.to_string()))?;
            Provider::Cuda
        }
    };
    let session = builder.commit_from_memory(model)?;
    Ok((session, provider))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::{to_bytes, Dim, GraphBuilder};

    /// Y = Relu(X . W + B) for X of shape [batch, 3], built by hand and run through ONNX Runtime.
    #[test]
    fn onnx_runtime_loads_and_runs_a_model() {
        let w = [1.0f32, -1.0, 0.5, 2.0, 0.0, -0.5]; // [3, 2]
        let b = [0.1f32, -0.2];
        let mut g = GraphBuilder::new("tiny");
        g.input("x", &[Dim::Named("batch".into()), Dim::Fixed(3)]);
        let wn = g.init_f32("w", &[3, 2], &w);
        let bn = g.init_f32("b", &[2], &b);
        let mm = g.node("MatMul", &["x", &wn], "mm", &[]);
        let add = g.node("Add", &[&mm, &bn], "add", &[]);
        g.node_named("Relu", &[&add], "y", &[]);
        g.output("y", &[Dim::Named("batch".into()), Dim::Fixed(2)]);
        let bytes = to_bytes(&g.finish(&[("hetvis.test".into(), "1".into())]));

        let lib = init(None).expect("ONNX Runtime library (run `make setup`)");
        assert!(lib.is_file());
        let (mut session, provider) =
            session_from_bytes(&bytes, &SessionConfig::default()).unwrap();
        assert_eq!(provider, Provider::Cpu);
        assert_eq!(
            session.metadata().unwrap().custom("hetvis.test").as_deref(),
            Some("1")
        );

        let x = ndarray::arr2(&[[1.0f32, 2.0, 3.0], [-1.0, 0.0, 1.0]]);
        let outputs = session
            .run(ort::inputs!["x" => ort::value::TensorRef::from_array_view(&x).unwrap()])
            .unwrap();
        let y = outputs["y"].try_extract_array::<f32>().unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        for r in 0..2 {
            for c in 0..2 {
                let expect = (0..3).map(|k| x[[r, k]] * w[k * 2 + c]).sum::<f32>() + b[c];
                assert!((y[[r, c]] - expect.max(0.0)).abs() < 1e-6, "y[{r},{c}]");
            }
        }
    }

    /// `--device cuda` never falls back to CPU silently: on a CPU-only ONNX Runtime build it is an error; where
    /// the CUDA provider exists, the session reports it.
    #[test]
    fn cuda_is_used_or_refused_never_silently_replaced() {
        use ort::ep::ExecutionProvider;
        let mut g = GraphBuilder::new("relu");
        g.input("x", &[Dim::Named("batch".into()), Dim::Fixed(2)]);
        g.node_named("Relu", &["x"], "y", &[]);
        g.output("y", &[Dim::Named("batch".into()), Dim::Fixed(2)]);
        let bytes = to_bytes(&g.finish(&[]));
        init(None).unwrap();
        let config = SessionConfig {
            device: Device::Cuda,
            ..Default::default()
        };
        let available = ort::ep::CUDA::is_available().unwrap_or(false);
        match session_from_bytes(&bytes, &config) {
            Ok((_, provider)) => assert!(available && provider == Provider::Cuda),
            Err(e) => {
                assert!(!available, "CUDA is available but registration failed: {e}");
                assert!(matches!(e, RuntimeError::Cuda(_)), "{e}");
            }
        }
    }

    #[test]
    fn explicit_library_path_wins_and_missing_file_is_an_error() {
        let p = Path::new("/nonexistent/libonnxruntime.so");
        assert_eq!(resolve_library(Some(p)).unwrap(), p);
    }
}
