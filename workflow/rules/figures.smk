rule draw_figures:
    input:
        table=figure_table,
    output:
        report(
            directory("results/{origin}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{origin}",
        ),
    log:
        "results/logs/draw_figures_{origin}.log",
    benchmark:
        "results/benchmarks/draw_figures_{origin}.tsv"
    conda:
        "../../environment.yml"
    params:
        threshold=config["figures"]["threshold"],
        lr=lr_tag(config["default_lr"]),
        checkpoints=config["figures"]["checkpoints"],
    shell:
        "python -m ktos figures --table {input.table:q} --output {output} "
        "--threshold {params.threshold} --lr {params.lr} "
        "--checkpoints {params.checkpoints} > {log} 2>&1"


rule write_tables:
    input:
        table=figure_table,
    output:
        verdict=report(
            "results/{origin}/tables/verdict.md",
            caption="../report/verdict.rst",
            category="Tables",
            subcategory="{origin}",
        ),
        checkpoints=report(
            "results/{origin}/tables/kl_checkpoints.csv",
            caption="../report/kl_checkpoints.rst",
            category="Tables",
            subcategory="{origin}",
        ),
        checkpoints_md="results/{origin}/tables/kl_checkpoints.md",
        stability_map="results/{origin}/tables/stability_map.csv",
        frontier="results/{origin}/tables/frontier.csv",
    log:
        "results/logs/write_tables_{origin}.log",
    benchmark:
        "results/benchmarks/write_tables_{origin}.tsv"
    conda:
        "../../environment.yml"
    params:
        out_dir=output_dir("verdict"),
        threshold=config["figures"]["threshold"],
        lr=lr_tag(config["default_lr"]),
        checkpoints=config["figures"]["checkpoints"],
    shell:
        "python -m ktos tables --table {input.table:q} --output {params.out_dir} "
        "--threshold {params.threshold} --lr {params.lr} "
        "--checkpoints {params.checkpoints} > {log} 2>&1"
