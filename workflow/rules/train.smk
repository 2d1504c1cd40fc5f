rule train:
    input:
        unpack(train_input),
    output:
        trajectory="results/runs/{method}_lr{lr}_seed{seed}/trajectory.jsonl",
        run_info="results/runs/{method}_lr{lr}_seed{seed}/run_info.json",
        model=maybe_temp(directory("results/runs/{method}_lr{lr}_seed{seed}/model")),
    log:
        "results/logs/train/{method}_lr{lr}_seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{method}_lr{lr}_seed{seed}.tsv"
    conda:
        "../../environment.yml"
    threads: config["resources"]["threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        run_dir=output_dir("run_info"),
        train_dir=input_dir("train"),
        eval_dir=input_dir("eval"),
        model=base_model(),
        use_kto_s=use_kto_s,
        train=config["train"],
        bf16=str(config["train"]["bf16"]).lower(),
        optional=train_optional_flags,
    shell:
        "python -m ktos train --model_name_or_path {params.model:q} "
        "--train_data {params.train_dir} --eval_data {params.eval_dir} "
        "--weights_from {input.balance_manifest} --output_dir {params.run_dir} "
        "--use_kto_s {params.use_kto_s} --learning_rate {wildcards.lr} --seed {wildcards.seed} "
        "--beta {params.train[beta]} --max_steps {params.train[max_steps]} "
        "--per_device_train_batch_size {params.train[per_device_train_batch_size]} "
        "--save_strategy steps --save_steps {params.train[save_steps]} "
        "--bf16 {params.bf16} --kl_probe_size {params.train[kl_probe_size]} "
        "--kl_probe_steps {params.train[kl_probe_steps]} {params.optional} > {log} 2>&1"
