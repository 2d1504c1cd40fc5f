rule synth_data:
    output:
        data=f"{DATA}/synthetic/data.jsonl",
        manifest=f"{DATA}/synthetic/manifest.json",
        heldout=f"{DATA}/synthetic/heldout.jsonl",
        corpus=f"{DATA}/synthetic/corpus.txt",
    log:
        f"results/logs/{DATA_TAG}/synth_data.log",
    benchmark:
        f"results/benchmarks/{DATA_TAG}/synth_data.tsv"
    conda:
        "../envs/train.yaml"
    params:
        out_dir=output_dir("manifest"),
        seed=config["synthetic"]["seed"],
        rows=config["synthetic"]["rows"],
        desirable=config["synthetic"]["desirable"],
        heldout=config["synthetic"]["heldout"],
    shell:
        "python -m ktos synth-data --output {params.out_dir} --seed {params.seed} "
        "--rows {params.rows} --desirable {params.desirable} "
        "--heldout {params.heldout} > {log} 2>&1"


rule pretrain_base:
    input:
        corpus=rules.synth_data.output.corpus,
        heldout=rules.synth_data.output.heldout,
    output:
        directory("results/models/bases/{base}"),
    log:
        "results/logs/pretrain_base/{base}.log",
    benchmark:
        "results/benchmarks/pretrain_base/{base}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1  # ktos.toy.pretrain.pretrain_base runs on one thread: faster than two for a tiny model
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        size=lambda wildcards: PRETRAINED_BASES[wildcards.base][0],
        seed=lambda wildcards: PRETRAINED_BASES[wildcards.base][1],
        reference=lambda wildcards: PLAN.reference_flag(wildcards.base),
        flags=PLAN.pretrain_flags,
    shell:
        "python -m ktos pretrain-base --corpus {input.corpus} --heldout {input.heldout} "
        "--output {output} --size {params.size} --seed {params.seed} {params.flags} {params.reference} > {log} 2>&1"


rule prepare:
    input:
        unpack(lambda wildcards: PLAN.prepare_input(rules.synth_data.output.data)),
    output:
        data=f"{DATA}/prepared/data.jsonl",
        manifest=f"{DATA}/prepared/manifest.json",
    log:
        f"results/logs/{DATA_TAG}/prepare.log",
    benchmark:
        f"results/benchmarks/{DATA_TAG}/prepare.tsv"
    conda:
        "../envs/train.yaml"
    params:
        # a local file or directory, else a hub id
        source=lambda wildcards, input: input.get("source", config["data"]["source"]),
        split=config["data"]["split"],
        out_dir=output_dir("manifest"),
    shell:
        "python -m ktos prepare --input {params.source:q} --output {params.out_dir} "
        "--split {params.split:q} > {log} 2>&1"


rule split:
    input:
        data=rules.prepare.output.data,
        manifest=rules.prepare.output.manifest,
    output:
        train=f"{DATA}/split/train/data.jsonl",
        train_manifest=f"{DATA}/split/train/manifest.json",
        eval=f"{DATA}/split/eval/data.jsonl",
        eval_manifest=f"{DATA}/split/eval/manifest.json",
        manifest=f"{DATA}/split/manifest.json",
    log:
        f"results/logs/{DATA_TAG}/split.log",
    benchmark:
        f"results/benchmarks/{DATA_TAG}/split.tsv"
    conda:
        "../envs/train.yaml"
    params:
        in_dir=input_dir("manifest"),
        out_dir=output_dir("manifest"),
        eval_fraction=config["data"]["eval_fraction"],
        seed=config["data"]["seed"],
    shell:
        "python -m ktos split --input {params.in_dir} --output {params.out_dir} "
        "--eval-fraction {params.eval_fraction} --seed {params.seed} > {log} 2>&1"


rule balance:
    input:
        data=rules.split.output.train,
        manifest=rules.split.output.train_manifest,
    output:
        data=f"{DATA}/balanced/seed{{seed}}/data.jsonl",
        manifest=f"{DATA}/balanced/seed{{seed}}/manifest.json",
    log:
        f"results/logs/{DATA_TAG}/balance_seed{{seed}}.log",
    benchmark:
        f"results/benchmarks/{DATA_TAG}/balance_seed{{seed}}.tsv"
    conda:
        "../envs/train.yaml"
    params:
        in_dir=input_dir("manifest"),
        out_dir=output_dir("manifest"),
        strategy=config["balance"]["strategy"],
        batch_size=config["train"]["per_device_train_batch_size"],
    shell:
        "python -m ktos balance --input {params.in_dir} --output {params.out_dir} "
        "--strategy {params.strategy} --batch-size {params.batch_size} "
        "--seed {wildcards.seed} > {log} 2>&1"
