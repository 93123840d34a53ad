"""Widgets of the explorer, one per module, grouped in a package per tab they serve.

Why by tab: a change to one tab (the chart's keys, the samples' marks) is read and made in one
folder, and what a tab's widgets share with another tab's is visible as an import across
folders. setup/, runs/, chart/, cosines/ and samples/ hold the tabs' widgets; frame/ what the
App composes itself around every tab (the log panel, the progress panel, the footer). The
modules directly here are shared by several tabs: the plotext chart base every chart draws on,
and the choice among the overlaid runs that the Samples and Cosines tabs step through.
"""
