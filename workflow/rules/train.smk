# The settings of each training job, from the config (ktos.study.plan.planning.Plan.train_settings), as the YAML file that
# `ktos train --config` reads: TRL's parser, so an unknown key is refused.
rule train_config:
    output:
        f"results/train_configs/{config['study']}/{{job}}.yaml",
    log:
        f"results/logs/train_configs/{config['study']}/{{job}}.log",
    wildcard_constraints:
        job="|".join(map(re.escape, TRAIN_JOBS)),
    localrule: True
    params:
        settings=lambda wildcards: PLAN.train_settings(
            TRAIN_JOBS[wildcards.job][0], rules.synth_data.output.heldout
        ),
    run:
        write_yaml(output[0], params.settings, log[0])


rule train_configs:
    input:
        expand(rules.train_config.output, job=TRAIN_JOBS),
    localrule: True


# ktos train saves the final model in the run directory, as trl kto does (LoRA: the adapter).
WEIGHTS_FILE = (
    "adapter_model.safetensors"
    if config["model"]["peft"]["use_peft"]
    else "model.safetensors"
)


# One training job per resources.runs_per_job runs of a regime (ktos.study.plan.planning.Plan.train_jobs): one process
# trains them one after the other, paying the start-up once. Snakemake still sees each run's own files.
for job, (regime, model, runs) in TRAIN_JOBS.items():

    rule:
        name:
            f"train_{job}"
        input:
            **PLAN.train_input(
                model,
                runs,
                {
                    "train": rules.balance.output.data,
                    "balance_manifest": rules.balance.output.manifest,
                    "eval": rules.split.output.eval,
                    "heldout": rules.synth_data.output.heldout,
                },
            ),
            config=expand(rules.train_config.output, job=job),
        output:
            trajectories=[f"{run}/trajectory.jsonl" for run in runs],
            run_info=[f"{run}/run_info.json" for run in runs],
            # TRL's model card, written with each checkpoint (the trainer saves one at the last step)
            model_cards=[f"{run}/README.md" for run in runs],
            # The event files of tensorboard (train.report_to), in <run>/runs/<time>_<host>/.
            events=(
                [directory(f"{run}/runs") for run in runs]
                if "tensorboard" in config["train"]["report_to"]
                else []
            ),
            # Weights are saved only when config keep_models (ktos train --save_model).
            models=(
                [f"{run}/{WEIGHTS_FILE}" for run in runs]
                if config["keep_models"]
                else []
            ),
        log:
            f"results/logs/train/{config['study']}/{job}.log",
        benchmark:
            f"results/benchmarks/train/{config['study']}/{job}.tsv"
        conda:
            "../envs/train.yaml"
        threads: config["resources"]["threads"] * PLAN.train_processes
        resources:
            **PLAN.train_resources,
        params:
            launcher=PLAN.train_launcher,
            runs=runs,
            model=lambda wildcards, input, model=model: input.get("model", model),
            save_model=str(config["keep_models"]).lower(),
            # ktos train replaces {seed} in these with each run's seed (--run_dirs); functions keep it unexpanded
            train_data=lambda wildcards: Path(rules.balance.output.data).parent,
            weights_from=lambda wildcards: rules.balance.output.manifest,
            eval_data=Path(rules.split.output.eval).parent,
        shell:
            "{params.launcher} --config {input.config} --run_dirs {params.runs} --model_name_or_path {params.model:q} "
            "--train_data {params.train_data:q} --eval_data {params.eval_data:q} "
            "--weights_from {params.weights_from:q} "
            # a diverged run is one of the study's outcomes (run_info.json status "diverged"), not a failed job
            "--save_model {params.save_model} --allow_divergence true > {log} 2>&1 && "
            # the checkpoints are there to resume a killed job; a finished job's runs keep their records only
            "for run in {params.runs}; do rm -rf $run/checkpoint-*; done"
