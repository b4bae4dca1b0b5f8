/* Module harvest-job-progress: reloads the job page every few seconds while
 * the job is New or Running (data-status), so that the progress bar and the
 * counts move. Without JavaScript the box shows a "Refresh" link instead.
 *
 *   <div data-module="harvest-job-progress" data-status="Running"
 *        data-module-interval="5">
 */
this.ckan.module('harvest-job-progress', function ($) {
  return {
    options: {
      interval: 5
    },

    initialize: function () {
      var status = this.el.data('status');
      if (status !== 'New' && status !== 'Running') {
        return;
      }
      this.el.find('.harvest-job-progress-refresh').addClass('d-none');
      this.el.find('.harvest-job-progress-auto').removeClass('d-none');
      var seconds = parseInt(this.options.interval, 10) || 5;
      this._timer = window.setTimeout(function () {
        window.location.reload();
      }, seconds * 1000);
    },

    teardown: function () {
      if (this._timer) {
        window.clearTimeout(this._timer);
      }
    }
  };
});
