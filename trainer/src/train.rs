//! Training of gallery and query models, with resumable checkpoints, a JSONL log and ONNX export.
//!
//! A run directory holds: `run.json` (what is trained), `checkpoint.safetensors` + `checkpoint.json` (after each
//! epoch; a re-run of the same command resumes after the last finished epoch, with fresh optimizer momentum),
//! `train_log.jsonl`, and when done `weights.safetensors`, `head.safetensors` (the classifier, which BCT
//! freezes), `model.onnx` + `model.json` (manifest).

use std::path::{Path, PathBuf};
use std::time::Instant;

use hetvis_models::arch::ModelSpec;
use hetvis_models::atomic::write as write_atomic;
use hetvis_models::manifest::{new_compat_id, ModelManifest, Provenance, Role};
use hetvis_models::onnx::export::export_to_files;
use hetvis_models::weights::Weights;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::compat::{self, CompatPreset, Term};
use crate::data::{augment, Dataset};
use crate::gallery_cache::GalleryEmbeddings;
use crate::head::CosineHead;
use crate::preset::{ClassifierPreset, HeadInit, KdPreset, Schedule};
use crate::tch_net::{load_into, TchNet};

/// How a query model is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueryMode {
    /// Own classifier plus the compatibility objective (`compat`): BCT's influence loss through the gallery's
    /// frozen classifier by default, or any composition of the terms of [`crate::compat`].
    Bct,
    /// Own classifier only: the control, expected to be incompatible.
    Independent,
    /// Own classifier plus the squared distance to the gallery embedding of the same image.
    L2,
    /// Starts from the gallery's weights (or `init`, e.g. a pruned gallery) and its classifier, then trains the
    /// own classifier only, at `finetune_lr_scale` of the learning rate.
    Finetune,
    /// Own classifier plus distillation of the gallery's logits (Hinton et al. 2015); no embedding-space tie.
    Kd,
}

impl QueryMode {
    pub fn name(self) -> &'static str {
        match self {
            QueryMode::Bct => "bct",
            QueryMode::Independent => "independent",
            QueryMode::L2 => "l2",
            QueryMode::Finetune => "finetune",
            QueryMode::Kd => "kd",
        }
    }

    /// Whether the objective ties the embedding to the gallery's space, so the model may share its compat id.
    pub fn claims_gallery_space(self) -> bool {
        matches!(self, QueryMode::Bct | QueryMode::L2)
    }
}

/// What a run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Objective {
    Gallery,
    Query { mode: QueryMode, gallery: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub name: String,
    pub spec: ModelSpec,
    pub objective: Objective,
    pub schedule: Schedule,
    pub classifier: ClassifierPreset,
    pub bct_weight: f64,
    pub l2_weight: f64,
    pub augment: bool,
    pub seed: u64,
    pub data: String,
    pub preset: String,
    /// Network weights to start from instead of a random init. `finetune` without one starts from the gallery's
    /// weights (the architectures must then be the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    #[serde(default)]
    pub kd: KdPreset,
    /// The compatibility objective of `bct` mode (absent in the records of plain-BCT runs).
    #[serde(default, skip_serializing_if = "CompatPreset::is_default")]
    pub compat: CompatPreset,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CheckpointState {
    epochs_done: usize,
    steps_done: usize,
}

/// Epochs a run directory's checkpoint has finished (0 without a readable checkpoint).
pub fn epochs_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("checkpoint.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<CheckpointState>(&t).ok())
        .map_or(0, |s| s.epochs_done)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    pub images_per_s: f64,
    pub seconds: f64,
    pub lr: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{dir} holds a different run ({what}); use another --out or delete it")]
    ConfigMismatch { dir: PathBuf, what: String },
    #[error("gallery run {dir} is not finished or unreadable: {message}")]
    Gallery { dir: PathBuf, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Arch(#[from] hetvis_models::arch::ArchError),
    #[error(transparent)]
    Export(#[from] hetvis_models::onnx::export::WriteError),
    #[error(transparent)]
    Write(#[from] hetvis_models::atomic::AtomicWriteError),
    #[error(transparent)]
    Weights(#[from] hetvis_models::weights::WeightsError),
    #[error(transparent)]
    Cache(#[from] crate::gallery_cache::CacheError),
}

/// A directory holds a run whose config differs from the one asked for: the error names each differing field
/// (dotted path, the stored value, then the asked-for one), so a changed preset or a moved gallery is obvious.
pub fn config_mismatch<T: Serialize>(dir: &Path, existing: &T, wanted: &T) -> TrainError {
    fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let none = Value::Null;
                    diff(
                        &sub,
                        x.get(k).unwrap_or(&none),
                        y.get(k).unwrap_or(&none),
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    diff(&format!("{path}[{i}]"), p, q, out);
                }
            }
            _ if a != b => {
                let short = |v: &Value| {
                    let t = v.to_string();
                    if t.chars().count() > 60 {
                        format!("{}...", t.chars().take(60).collect::<String>())
                    } else {
                        t
                    }
                };
                out.push(format!("{path}: {} here, {} asked", short(a), short(b)));
            }
            _ => {}
        }
    }
    let mut fields = Vec::new();
    match (serde_json::to_value(existing), serde_json::to_value(wanted)) {
        (Ok(a), Ok(b)) => diff("", &a, &b, &mut fields),
        _ => fields.push("its config".into()),
    }
    if fields.is_empty() {
        fields.push("a config that compares unequal".into());
    }
    TrainError::ConfigMismatch {
        dir: dir.to_owned(),
        what: fields.join("; "),
    }
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| file_err(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| file_err(path, e))?;
    Ok(write_atomic(path, text.as_bytes())?)
}

/// Records `wanted` at `path` (a run directory's identity: `run.json`, `supernet.json`, `search.json`), or
/// checks it against the record there: a directory resumes only the run it was made for.
pub fn claim_record<T>(dir: &Path, path: &Path, wanted: &T) -> Result<(), TrainError>
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq,
{
    if path.exists() {
        let existing: T = read_json(path)?;
        if &existing != wanted {
            return Err(config_mismatch(dir, &existing, wanted));
        }
        Ok(())
    } else {
        write_json(path, wanted)
    }
}

/// A finished gallery run, loaded for a query run: frozen network, frozen classifier, compat id.
pub struct GalleryRun {
    pub dir: PathBuf,
    pub manifest: ModelManifest,
    pub net: TchNet,
    pub head: CosineHead,
    _vs: nn::VarStore,
}

/// The manifest of a finished gallery run (its `model.json`), without loading its weights.
pub fn gallery_manifest(dir: &Path) -> Result<ModelManifest, TrainError> {
    ModelManifest::load(&dir.join("model.json")).map_err(|e| TrainError::Gallery {
        dir: dir.to_owned(),
        message: e.to_string(),
    })
}

impl GalleryRun {
    pub fn load(
        dir: &Path,
        classifier: ClassifierPreset,
        device: Device,
    ) -> Result<Self, TrainError> {
        let gerr = |message: String| TrainError::Gallery {
            dir: dir.to_owned(),
            message,
        };
        let manifest = gallery_manifest(dir)?;
        if manifest.role != Role::Gallery {
            return Err(gerr(format!(
                "{} is a {} model",
                dir.display(),
                manifest.role
            )));
        }
        let mut vs = nn::VarStore::new(device);
        let net = TchNet::new(&vs.root(), &manifest.spec.lower()?);
        load_into(&vs, &Weights::load(&dir.join("weights.safetensors"))?)?;
        let head_w = Weights::load(&dir.join("head.safetensors"))?;
        let hw = head_w.get("head.weight")?;
        let head = CosineHead::new(&(vs.root() / "head"), hw.shape[0], hw.shape[1], classifier);
        load_into(&vs, &head_w)?;
        vs.freeze();
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
            net,
            head,
            _vs: vs,
        })
    }
}

/// Where a run's network variables live in its var store (the classifier is under `head`).
pub const NET_PREFIX: &str = "net";

/// Copies `weights` (named as the lowered network names them, as `weights.safetensors` files are) into the
/// network variables of a run's var store; every tensor of `spec` must be there with its shape.
pub fn init_net(vs: &nn::VarStore, spec: &ModelSpec, weights: &Weights) -> Result<(), TrainError> {
    let net = spec.lower()?;
    weights.check(&net)?;
    let mut prefixed = Weights::default();
    for p in net.params() {
        let t = weights.get(&p.name)?;
        prefixed.insert(
            format!("{NET_PREFIX}.{}", p.name),
            t.shape.clone(),
            t.data.clone(),
        );
    }
    load_into(vs, &prefixed)?;
    Ok(())
}

/// Learning rate at a step: cosine decay from the peak, after a one-epoch linear warm-up.
fn lr_at(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

pub struct Outcome {
    pub dir: PathBuf,
    pub manifest: ModelManifest,
    pub resumed_from: usize,
    pub skipped: bool,
}

/// Trains (or resumes, or skips when finished) the run in `dir`.
pub fn run(
    dir: &Path,
    config: &RunConfig,
    data: &Dataset,
    device: Device,
) -> Result<Outcome, TrainError> {
    if let Objective::Query {
        mode: QueryMode::Finetune,
        gallery,
    } = &config.objective
    {
        // Checked before anything is written, so the corrected command can reuse the directory.
        let m =
            ModelManifest::load(&gallery.join("model.json")).map_err(|e| TrainError::Gallery {
                dir: gallery.clone(),
                message: e.to_string(),
            })?;
        if config.init.is_none() && m.spec != config.spec {
            return Err(TrainError::Gallery {
                dir: gallery.clone(),
                message: "finetune starts from the gallery's weights, which need the gallery's \
                          architecture; pass --init with weights for this one (e.g. a pruned gallery)"
                    .into(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    claim_record(dir, &dir.join("run.json"), config)?;
    let model_json = dir.join("model.json");
    if model_json.exists() && dir.join("model.onnx").exists() {
        let manifest = ModelManifest::load(&model_json).map_err(|e| file_err(&model_json, e))?;
        tracing::info!(dir = %dir.display(), "already trained; skipping");
        return Ok(Outcome {
            dir: dir.to_owned(),
            manifest,
            resumed_from: config.schedule.epochs,
            skipped: true,
        });
    }

    tch::manual_seed(config.seed as i64);
    let gallery = match &config.objective {
        Objective::Gallery => None,
        Objective::Query { gallery, .. } => {
            Some(GalleryRun::load(gallery, config.classifier, device)?)
        }
    };
    if let Some(g) = &gallery {
        if g.manifest.embedding_dim != config.spec.embedding_dim {
            return Err(TrainError::Gallery {
                dir: dir.to_owned(),
                message: format!(
                    "embedding dims differ: gallery {}, query {}",
                    g.manifest.embedding_dim, config.spec.embedding_dim
                ),
            });
        }
    }

    let mut vs = nn::VarStore::new(device);
    let net = TchNet::new(&(vs.root() / NET_PREFIX), &config.spec.lower()?);
    let head = CosineHead::new(
        &(vs.root() / "head"),
        data.classes,
        config.spec.embedding_dim,
        config.classifier,
    );
    let mode = match &config.objective {
        Objective::Query { mode, .. } => Some(*mode),
        Objective::Gallery => None,
    };
    // `finetune` without `init` starts from the gallery's own weights (the architecture was checked above).
    let init = match (&config.init, &gallery) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(g)) if mode == Some(QueryMode::Finetune) => {
            Some(g.dir.join("weights.safetensors"))
        }
        (None, _) => None,
    };
    if let Some(path) = &init {
        init_net(&vs, &config.spec, &Weights::load(path)?)?;
        tracing::info!(init = %path.display(), "network initialised from weights");
    }
    if let (Some(mode), Some(g)) = (mode, &gallery) {
        // Fine-tuning starts from the gallery's classifier too, and so do compatible modes when the preset asks;
        // only when the classes are the same.
        let from_gallery = mode == QueryMode::Finetune
            || (mode.claims_gallery_space() && config.classifier.init == HeadInit::Gallery);
        if from_gallery && !head.start_from(&g.head) {
            tracing::warn!(
                "gallery classifier has other classes; the query model starts a new one"
            );
        }
    }

    // The gallery's embeddings of the training images, for the objective's terms that read them.
    let cached = match (&gallery, mode) {
        (Some(g), Some(QueryMode::Bct)) if config.compat.objective.needs_gallery_embeddings() => {
            Some(gallery_embeddings(g, &config.compat, data, device)?)
        }
        _ => None,
    };
    let cls_weight = match mode {
        Some(QueryMode::Bct) => config.compat.cls_weight,
        _ => 1.0,
    };

    let resumed_from = fit(
        &FitConfig {
            dir,
            name: &config.name,
            schedule: config.schedule,
            augment: config.augment,
        },
        &mut vs,
        data,
        device,
        |x, y, rows, _epoch| {
            let e = net.forward_t(x, true);
            let mut loss = head.loss(&e, y) * cls_weight;
            if let (Some(g), Objective::Query { mode, .. }) = (&gallery, &config.objective) {
                match mode {
                    QueryMode::Bct => {
                        loss += compatibility_loss(
                            &config.compat,
                            config.bct_weight,
                            g,
                            cached.as_ref(),
                            &e,
                            y,
                            rows,
                        )
                    }
                    QueryMode::L2 => {
                        let target = tch::no_grad(|| g.net.forward_t(x, false));
                        loss += (&e - target)
                            .square()
                            .sum_dim_intlist(1, false, Kind::Float)
                            .mean(Kind::Float)
                            * config.l2_weight
                    }
                    QueryMode::Kd => {
                        let teacher =
                            tch::no_grad(|| g.head.logits(&g.net.forward_t(x, false), None));
                        loss += crate::distill::kd_loss(
                            &head.logits(&e, None),
                            &teacher,
                            config.kd.temperature,
                        ) * config.kd.weight
                    }
                    QueryMode::Independent | QueryMode::Finetune => {}
                }
            }
            let correct = head
                .logits(&e, None)
                .argmax(-1, false)
                .eq_tensor(y)
                .sum(Kind::Int64);
            (loss, correct)
        },
        || accuracy(&net, &head, data),
    )?;

    // Ship: network weights (without the net. prefix), the classifier, the ONNX model and its manifest.
    let weights = net.weights()?;
    let weight_bytes = weights.to_bytes()?;
    write_atomic(&dir.join("weights.safetensors"), &weight_bytes)?;
    let mut head_w = Weights::default();
    let hw = Vec::<f32>::try_from(head.weight.to_device(Device::Cpu).flatten(0, -1))?;
    head_w.insert(
        "head.weight",
        vec![data.classes, config.spec.embedding_dim],
        hw,
    );
    write_atomic(&dir.join("head.safetensors"), &head_w.to_bytes()?)?;

    // BCT and L2 models are trained into the gallery's embedding space; the other modes are not (fine-tuning
    // starts there but nothing keeps it there), so they get an id of their own and a server will refuse to pair
    // them with the gallery index.
    let (role, mode, compat_id) = match (&config.objective, &gallery) {
        (Objective::Query { mode, .. }, Some(g)) => (
            Role::Query,
            match mode {
                QueryMode::Bct => config.compat.mode_name(),
                other => other.name().to_owned(),
            },
            if mode.claims_gallery_space() {
                g.manifest.compat_id.clone()
            } else {
                new_compat_id(&config.name, &weight_bytes)
            },
        ),
        _ => (
            Role::Gallery,
            "gallery".to_owned(),
            new_compat_id(&config.name, &weight_bytes),
        ),
    };
    let provenance = Provenance {
        data: config.data.clone(),
        preset: config.preset.clone(),
        seed: config.seed,
        epochs: config.schedule.epochs,
        mode,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let manifest = ModelManifest::for_spec(
        &config.name,
        role,
        &config.spec,
        data.preprocessing.clone(),
        &compat_id,
        provenance,
    )?;
    export_to_files(&dir.join("model.onnx"), &config.spec, &weights, &manifest)?;
    Ok(Outcome {
        dir: dir.to_owned(),
        manifest,
        resumed_from,
        skipped: false,
    })
}

/// The gallery's cached embeddings of `data`'s training images (with the neighbour lists `rank` reads).
pub fn gallery_embeddings(
    g: &GalleryRun,
    compat: &CompatPreset,
    data: &Dataset,
    device: Device,
) -> Result<GalleryEmbeddings, TrainError> {
    let neighbours = if compat.objective.has(Term::Rank) {
        compat.rank_k
    } else {
        0
    };
    Ok(GalleryEmbeddings::load_or_compute(
        &g.dir,
        g.manifest.embedding_dim,
        |x| g.net.forward_t(x, false),
        data,
        neighbours,
        device,
    )?)
}

/// The compatibility objective's loss for query embeddings `e` of the training images at `rows` (labels `y`):
/// BCT's influence loss through the gallery's frozen classifier (weight `bct_weight`) when the objective has it,
/// plus its embedding terms, which read `cached`.
pub fn compatibility_loss(
    compat: &CompatPreset,
    bct_weight: f64,
    g: &GalleryRun,
    cached: Option<&GalleryEmbeddings>,
    e: &Tensor,
    y: &Tensor,
    rows: &Tensor,
) -> Tensor {
    let mut loss = if compat.objective.has(Term::Bct) {
        g.head.loss(e, y) * bct_weight
    } else {
        e.zeros_like().sum(Kind::Float)
    };
    if let Some(cache) = cached {
        let contrastive = compat.objective.has(Term::Con) || compat.objective.has(Term::Supcon);
        let batch = cache.batch(rows, if contrastive { compat.negatives } else { 0 });
        if let Some(terms) = compat::embedding_terms(compat, e, &batch.view()) {
            loss += terms;
        }
    }
    loss
}

/// What [`fit`] needs besides the model.
pub struct FitConfig<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub schedule: Schedule,
    pub augment: bool,
}

/// The training loop shared by every trainer: resume from `dir`'s checkpoint, SGD (momentum 0.9, Nesterov,
/// weight decay 5e-4) with warm-up + cosine learning rate, shuffled (and optionally augmented) batches, a
/// progress bar, one `train_log.jsonl` line and one checkpoint per epoch. `step(x, y, rows, epoch)` (`rows`:
/// the batch's indices in the training split) returns the
/// batch loss and the number of correct predictions; `validate()` the validation accuracy. Returns the number
/// of epochs that were already done when it started.
pub fn fit(
    cfg: &FitConfig,
    vs: &mut nn::VarStore,
    data: &Dataset,
    device: Device,
    mut step: impl FnMut(&Tensor, &Tensor, &Tensor, usize) -> (Tensor, Tensor),
    mut validate: impl FnMut() -> f64,
) -> Result<usize, TrainError> {
    let dir = cfg.dir;
    let ckpt = dir.join("checkpoint.safetensors");
    let ckpt_state = dir.join("checkpoint.json");
    let mut state = CheckpointState::default();
    if ckpt.exists() && ckpt_state.exists() {
        vs.load(&ckpt)?;
        state = read_json(&ckpt_state)?;
        tracing::info!(epochs_done = state.epochs_done, "resuming from checkpoint");
    }
    let resumed_from = state.epochs_done;
    let sched = cfg.schedule;
    let n = data.train.len() as i64;
    let batch = sched.batch as i64;
    let steps_per_epoch = (n / batch).max(1) as usize;
    let total = steps_per_epoch * sched.epochs;
    let mut opt = nn::Sgd {
        momentum: 0.9,
        nesterov: true,
        wd: 5e-4,
        ..Default::default()
    }
    .build(vs, sched.lr)?;
    let log_path = dir.join("train_log.jsonl");
    let bar = crate::progress::bar(
        total as u64,
        "{prefix:>12} [{bar:25}] {pos}/{len} {msg} (eta {eta})",
    );
    bar.set_prefix(cfg.name.to_owned());
    bar.set_position(state.steps_done as u64);
    for epoch in state.epochs_done..sched.epochs {
        let start = Instant::now();
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0i64);
        let mut lr = sched.lr;
        for s in 0..steps_per_epoch {
            lr = lr_at(state.steps_done, total, steps_per_epoch, sched.lr);
            opt.set_lr(lr);
            let idx = perm.narrow(0, s as i64 * batch, batch);
            let mut x = data.train.x.index_select(0, &idx);
            if cfg.augment {
                x = augment(&x, 2);
            }
            let y = data.train.y.index_select(0, &idx);
            let (loss, right) = step(&x, &y, &idx, epoch);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            loss_sum += l;
            correct += right.int64_value(&[]);
            seen += batch;
            state.steps_done += 1;
            let rate = seen as f64 / start.elapsed().as_secs_f64();
            bar.set_message(format!(
                "ep {}/{} loss {l:.3} {rate:.0} img/s",
                epoch + 1,
                sched.epochs
            ));
            bar.inc(1);
        }
        let seconds = start.elapsed().as_secs_f64();
        let entry = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / steps_per_epoch as f64,
            train_accuracy: correct as f64 / seen as f64,
            val_accuracy: validate(),
            images_per_s: seen as f64 / seconds,
            seconds,
            lr,
        };
        tracing::info!(
            run = cfg.name,
            epoch = entry.epoch,
            loss = entry.loss,
            val_accuracy = entry.val_accuracy,
            images_per_s = entry.images_per_s as u64,
            "epoch done"
        );
        append_log(&log_path, &entry)?;
        // Checkpoint: weights first (written atomically), then the state that points at them.
        hetvis_models::atomic::write_via(&ckpt, |tmp| vs.save(tmp).map_err(std::io::Error::other))
            .map_err(|e| file_err(&ckpt, e))?;
        state.epochs_done = epoch + 1;
        write_json(&ckpt_state, &state)?;
    }
    bar.finish_and_clear();
    Ok(resumed_from)
}

/// Classification accuracy of the model's own head on the validation split (a cheap progress signal).
pub fn accuracy(net: &TchNet, head: &CosineHead, data: &Dataset) -> f64 {
    let n = data.val.len();
    if n == 0 {
        return f64::NAN;
    }
    tch::no_grad(|| {
        let mut correct = 0i64;
        for start in (0..n).step_by(512) {
            let len = 512.min(n - start) as i64;
            let x = data.val.x.narrow(0, start as i64, len);
            let y = data.val.y.narrow(0, start as i64, len);
            let pred = head
                .logits(&net.forward_t(&x, false), None)
                .argmax(-1, false);
            correct += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        }
        correct as f64 / n as f64
    })
}

fn append_log(path: &Path, entry: &EpochLog) -> Result<(), TrainError> {
    use std::io::Write;
    let line = serde_json::to_string(entry).map_err(|e| file_err(path, e))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    writeln!(f, "{line}").map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_done_reads_the_checkpoint_and_is_zero_without_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(epochs_done(dir.path()), 0);
        std::fs::write(
            dir.path().join("checkpoint.json"),
            r#"{"epochs_done": 3, "steps_done": 99}"#,
        )
        .unwrap();
        assert_eq!(epochs_done(dir.path()), 3);
        std::fs::write(dir.path().join("checkpoint.json"), "not json").unwrap();
        assert_eq!(epochs_done(dir.path()), 0);
    }

    #[test]
    fn a_config_mismatch_names_the_fields_that_differ() {
        let a = serde_json::json!({"name": "m", "gallery": "runs/a/gallery",
            "schedule": {"epochs": 3, "lr": 0.1}, "seed": 0, "widths": [1, 2, 3]});
        let b = serde_json::json!({"name": "m", "gallery": "runs/b/gallery",
            "schedule": {"epochs": 4, "lr": 0.1}, "seed": 0, "extra": true, "widths": [1, 2, 4]});
        let text = config_mismatch(Path::new("d"), &a, &b).to_string();
        assert!(
            text.contains(r#"gallery: "runs/a/gallery" here, "runs/b/gallery" asked"#),
            "{text}"
        );
        assert!(text.contains("schedule.epochs: 3 here, 4 asked"), "{text}");
        assert!(text.contains("extra: null here, true asked"), "{text}");
        // Inside an array, the element that differs (a long spec's blocks would print alike truncated).
        assert!(text.contains("widths[2]: 3 here, 4 asked"), "{text}");
        assert!(!text.contains("lr") && !text.contains("seed"), "{text}");
    }
    use hetvis_models::arch::{Backbone, ResNetSpec, Stem};

    fn resnet18(width: f64) -> ModelSpec {
        ModelSpec::new(
            Backbone::Resnet(ResNetSpec {
                depth: 18,
                width,
                stem: Stem::Small,
                inner: None,
            }),
            16,
            8,
        )
    }

    /// Fine-tuning starts where the gallery is: the initialised query network computes the gallery's
    /// embedding, and the copied classifier scores it as the gallery's does.
    #[test]
    fn finetune_init_starts_at_the_gallery() {
        let spec = resnet18(0.25);
        let net = spec.lower().unwrap();
        let w = Weights::random(&net, 3);
        let gallery_vs = nn::VarStore::new(Device::Cpu);
        let gallery = TchNet::new(&gallery_vs.root(), &net);
        load_into(&gallery_vs, &w).unwrap();
        let gallery_head = CosineHead::new(
            &(gallery_vs.root() / "head"),
            4,
            8,
            ClassifierPreset {
                scale: 16.0,
                margin: 0.2,
                init: crate::preset::HeadInit::Random,
            },
        );
        let query_vs = nn::VarStore::new(Device::Cpu);
        let query = TchNet::new(&(query_vs.root() / NET_PREFIX), &net);
        let query_head = CosineHead::new(&(query_vs.root() / "head"), 4, 8, gallery_head.config);
        init_net(&query_vs, &spec, &w).unwrap();
        tch::no_grad(|| {
            query_head
                .weight
                .shallow_clone()
                .copy_(&gallery_head.weight)
        });
        let x = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 3]);
        let (eg, eq) = (gallery.forward_t(&x, false), query.forward_t(&x, false));
        let diff = (&eg - &eq).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "embeddings differ by {diff}");
        let (lg, lq) = (
            gallery_head.loss(&eg, &y).double_value(&[]),
            query_head.loss(&eq, &y).double_value(&[]),
        );
        assert!((lg - lq).abs() < 1e-6, "{lg} vs {lq}");
        // Weights of another architecture are refused, not half-loaded.
        let other = Weights::random(&resnet18(0.5).lower().unwrap(), 3);
        assert!(matches!(
            init_net(&query_vs, &spec, &other),
            Err(TrainError::Weights(_))
        ));
    }

    #[test]
    fn lr_warms_up_then_decays_to_zero() {
        assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!(lr_at(55, 100, 10, 1.0) < 0.6);
        assert!(lr_at(100, 100, 10, 1.0).abs() < 1e-12);
    }
}
