//! What stays fixed across training commands (preset, data, device, seeds) and the run configurations derived
//! from it: a gallery run, a query run, a tier's super-network, a search. The pipeline, the studies and the
//! single-stage commands all start from one [`Context`].

use std::path::Path;

use hetvis_models::arch::ModelSpec;
use tch::Device;

use crate::cmpnas::{self, Evaluator, Reward, SupernetLoss, SupernetRun};
use crate::data::Dataset;
use crate::preset::{ChildSampling, Preset, Schedule};
use crate::search::SearchConfig;
use crate::tier::{space_for, Tier};
use crate::train::{GalleryRun, Objective, QueryMode, RunConfig, TrainError};

/// Everything that stays fixed across the pipeline's stages.
pub struct Context<'a> {
    pub preset: &'a Preset,
    pub preset_name: &'a str,
    pub data: &'a Dataset,
    pub data_label: &'a str,
    pub device: Device,
    pub seed: u64,
    /// Seed of the evolutionary search when it should differ from `seed`, which also seeds the super-network's
    /// training: a second search over one trained super-network (`hetvis-train search --search-seed`).
    pub search_seed: Option<u64>,
}

impl Context<'_> {
    /// A run of `spec` under this context's preset, seed and data, with `objective` and `schedule`.
    fn run_config(
        &self,
        name: &str,
        spec: ModelSpec,
        objective: Objective,
        schedule: Schedule,
    ) -> RunConfig {
        let p = self.preset;
        RunConfig {
            name: name.to_owned(),
            spec,
            objective,
            schedule,
            classifier: p.classifier,
            bct_weight: p.bct_weight,
            l2_weight: p.l2_weight,
            augment: p.augment,
            seed: self.seed,
            data: self.data_label.to_owned(),
            preset: self.preset_name.to_owned(),
            init: None,
            kd: p.kd,
            compat: Default::default(),
        }
    }

    pub fn query_config(
        &self,
        name: &str,
        spec: ModelSpec,
        mode: QueryMode,
        gallery: &Path,
    ) -> RunConfig {
        let p = self.preset;
        let lr = if mode == QueryMode::Finetune {
            p.query.lr * p.finetune_lr_scale
        } else {
            p.query.lr
        };
        let objective = Objective::Query {
            mode,
            gallery: gallery.to_owned(),
        };
        let mut config = self.run_config(name, spec, objective, Schedule { lr, ..p.query });
        // Only the compatible mode trains with the objective (the others' records stay as they were).
        if mode == QueryMode::Bct {
            config.compat = p.compat.clone();
        }
        config
    }

    pub fn gallery_config(&self, name: &str) -> RunConfig {
        let p = self.preset;
        self.run_config(name, p.gallery_spec(), Objective::Gallery, p.gallery.train)
    }

    /// The super-network of a tier, over [`space_for`] the tier.
    pub fn supernet_run(
        &self,
        gallery: &Path,
        tier: Tier,
        budget: f64,
        loss: SupernetLoss,
    ) -> SupernetRun {
        let p = self.preset;
        let space = space_for(p, tier, budget);
        SupernetRun {
            space,
            input_size: p.input_size,
            embedding_dim: p.embedding_dim,
            classes: self.data.classes,
            loss,
            gallery: gallery.to_owned(),
            classifier: p.classifier,
            preset: p.cmpnas.supernet,
            bct_weight: p.bct_weight,
            compat: match loss {
                SupernetLoss::Bct => p.compat.clone(),
                SupernetLoss::Vanilla => Default::default(),
            },
            seed: self.seed,
            train_under_mmacs: (p.cmpnas.supernet.sampling == ChildSampling::UnderBudget)
                .then_some(budget),
        }
    }

    /// Trains (or reuses) the super-network in `supernet_dir` and searches it into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        gallery: &Path,
        tier: Tier,
        budget: f64,
        loss: SupernetLoss,
        reward: Reward,
        supernet_dir: &Path,
        out: &Path,
    ) -> Result<cmpnas::SearchSummary, TrainError> {
        let run = self.supernet_run(gallery, tier, budget, loss);
        let sn = cmpnas::train_supernet(
            supernet_dir,
            &run,
            self.data,
            self.device,
            self.preset.augment,
        )?;
        let g = GalleryRun::load(gallery, self.preset.classifier, self.device)?;
        let c = &self.preset.cmpnas;
        let evaluator = Evaluator::new(self.data, &g, c, reward, run.preset.batch);
        let rescorer = (c.rescore.top > 1)
            .then(|| Evaluator::rescorer(self.data, &g, c, reward, run.preset.batch));
        let config = SearchConfig {
            seed: self.search_seed.unwrap_or(self.seed),
            ..c.search
        };
        cmpnas::search_dir(
            out,
            &sn,
            &evaluator,
            rescorer.as_ref().map(|r| (r, c.rescore.top)),
            &config,
            budget,
            reward,
            c.reward_metric,
        )
    }
}
