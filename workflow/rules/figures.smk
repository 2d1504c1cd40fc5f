rule draw_figures:
    input:
        table=figure_table,
        run_info=figure_run_info,
    output:
        report(
            directory(f"results/{{origin}}/{config['study']}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{origin}",
        ),
    log:
        f"results/logs/{config['study']}/draw_figures_{{origin}}.log",
    benchmark:
        f"results/benchmarks/{config['study']}/draw_figures_{{origin}}.tsv"
    conda:
        # Not analysis.yaml: ktos.study.figures imports torch (ktos.losses.gradient_weight, the companion figure).
        "../envs/train.yaml"
    params:
        analysis=analysis_flags(),
        run_info=run_info_flag,
    shell:
        "python -m ktos figures --table {input.table:q} --output {output} {params.analysis} {params.run_info} "
        "> {log} 2>&1"


rule write_tables:
    input:
        table=figure_table,
        run_info=figure_run_info,
    output:
        verdict=report(
            f"results/{{origin}}/{config['study']}/tables/verdict.md",
            caption="../report/verdict.rst",
            category="Tables",
            subcategory="{origin}",
        ),
        runs=report(
            f"results/{{origin}}/{config['study']}/tables/runs.csv",
            caption="../report/runs.rst",
            category="Tables",
            subcategory="{origin}",
        ),
        paired=f"results/{{origin}}/{config['study']}/tables/paired.csv",
        cells=f"results/{{origin}}/{config['study']}/tables/cells.csv",
    log:
        f"results/logs/{config['study']}/write_tables_{{origin}}.log",
    benchmark:
        f"results/benchmarks/{config['study']}/write_tables_{{origin}}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        out_dir=output_dir("verdict"),
        analysis=analysis_flags(),
        run_info=run_info_flag,
    shell:
        "python -m ktos tables --table {input.table:q} --output {params.out_dir} {params.analysis} "
        "{params.run_info} > {log} 2>&1"
