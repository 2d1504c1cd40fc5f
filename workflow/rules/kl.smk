rule extract_kl:
    input:
        trajectories=PLAN.run_files("trajectory.jsonl"),
        run_info=PLAN.run_files("run_info.json"),
    output:
        table=report(
            f"{STUDY_DIR}/trajectories.csv.gz",
            caption="../report/trajectories.rst",
            category="Trajectories",
        ),
        run_info=f"{STUDY_DIR}/run_info.jsonl.gz",
    log:
        f"results/logs/{config['study']}/extract_kl.log",
    benchmark:
        f"results/benchmarks/{config['study']}/extract_kl.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        runs=lambda wildcards, input: [Path(p).parent for p in input.trajectories],
    shell:
        "python -m ktos extract-kl --runs {params.runs} --output {output.table} "
        "--run-info {output.run_info} > {log} 2>&1"
