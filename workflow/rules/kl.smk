rule extract_kl:
    input:
        trajectories=run_files("trajectory.jsonl"),
        run_info=run_files("run_info.json"),
    output:
        report(
            f"{STUDY_DIR}/trajectories.csv",
            caption="../report/trajectories.rst",
            category="Trajectories",
        ),
    log:
        f"results/logs/{config['study']}/extract_kl.log",
    benchmark:
        f"results/benchmarks/{config['study']}/extract_kl.tsv"
    conda:
        "../../environment.yml"
    params:
        runs=f"results/runs/{config['study']}",
    shell:
        "python -m ktos extract-kl --runs {params.runs} --output {output} > {log} 2>&1"
